"""backprop.distributed without MPI: grad_blocks on one process, and the argument checks."""

import numpy as np
import pytest

from backprop.train import Trainer, fit

from .scenarios import run


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.weights + a.biases, b.weights + b.biases))


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_one_block_is_the_plain_kernel_path(backend):
    from backprop.backends import why_unavailable
    if why_unavailable(backend):
        pytest.skip(why_unavailable(backend))
    for name in ("adam", "sse", "dropout", "cross_entropy"):
        a, ha = run(name, backend=backend, reduction="fixed", grad_blocks=1)
        b, hb = run(name, backend=backend, fused=False)
        assert _same(a, b), name
        assert ha.loss == hb.loss


def test_blocks_are_reproducible_and_close_to_one_product():
    a, _ = run("momentum", reduction="fixed", grad_blocks=5)
    b, _ = run("momentum", reduction="fixed", grad_blocks=5)
    c, _ = run("momentum", fused=False)
    assert _same(a, b)
    for x, y in zip(a.weights, c.weights):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


def test_argument_checks():
    import backprop as bp
    net = bp.MLP([4, 3, 2], dtype="float64", seed=0)
    X, Y = np.zeros((6, 4)), np.zeros((6, 2))
    with pytest.raises(ValueError, match="reduction"):
        fit(net, X, Y, reduction="mean", epochs=1)
    with pytest.raises(ValueError, match="grad_blocks applies to reduction='fixed'"):
        Trainer(net, "mse", grad_blocks=2)
    with pytest.raises(ValueError, match="kernel path"):
        Trainer(net, "mse", fused=True, reduction="fixed", grad_blocks=2)
    with pytest.raises(ValueError, match="callable loss"):
        Trainer(net, lambda F, Y: ((F - Y) ** 2).sum(), reduction="fixed")
    with pytest.raises(ValueError, match="grad_blocks must be an integer"):
        Trainer(net, "mse", reduction="fixed", grad_blocks=0)
    with pytest.raises(ValueError, match="transport"):
        Trainer(net, "mse", reduction="fixed", transport="carrier-pigeon")
