"""backprop.distributed without MPI: grad_blocks on one process, and the argument checks."""

import numpy as np
import pytest

from backprop.distributed import LocalComm
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


class _Uncopyable(LocalComm):
    """Like a Dup'd mpi4py communicator: cannot be deep-copied or pickled."""

    def __deepcopy__(self, memo):
        raise ValueError("cannot serialize")


def test_estimator_comm_is_a_parameter_and_clone_keeps_it():
    pytest.importorskip("sklearn")
    from sklearn.base import clone

    import backprop as bp
    comm = _Uncopyable()
    for cls in (bp.MLPRegressor, bp.MLPClassifier):
        est = cls((4,), comm=comm, max_iter=3)
        assert est.get_params()["comm"] is comm
        copy = clone(est)
        assert copy.comm is comm and est.comm is comm and copy.max_iter == 3
        assert clone(cls((4,))).comm is None


def test_estimator_with_one_rank_is_the_plain_fit():
    """comm with one rank (the distributed step, one allreduce per step on LocalComm): the
    parameters of the plain fit, here bit for bit (one rank sums the same terms)."""
    import warnings

    import backprop as bp
    rng = np.random.default_rng(0)
    X = rng.normal(size=(41, 3))
    y = X @ rng.normal(size=3)
    w = rng.uniform(0.5, 2.0, 41)
    for solver in ("adam", "lbfgs"):
        ests = [bp.MLPRegressor((5,), solver=solver, dtype="float64", max_iter=4, batch_size=8,
                               alpha=1e-3, random_state=1, comm=c) for c in (None, LocalComm())]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for est in ests:
                est.fit(X, y, sample_weight=w)
        a_params = ests[0].coefs_ + ests[0].intercepts_
        for a, b in zip(a_params, ests[1].coefs_ + ests[1].intercepts_):
            assert np.array_equal(a, b)
        assert ests[0].n_iter_ == ests[1].n_iter_


def test_estimator_progress_is_printed_by_rank_0_only(capsys):
    """Logs from rank 0 only: a rank-1 stand-in communicator prints nothing with verbose=True."""
    import numpy as np

    import backprop as bp

    class Rank(object):
        def __init__(self, rank):
            self.rank = rank

        def Get_rank(self):
            return self.rank

    X, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20.0)
    est = bp.MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, verbose=True, backend="numpy")
    for rank, printed in ((0, True), (1, False)):
        est.comm = Rank(rank)
        assert est._logs is printed
    est.comm = None
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    assert "Iteration 1, loss" in capsys.readouterr().out


def test_one_rank_raises_the_error_instead_of_aborting():
    """With a communicator of one rank no other rank waits in a collective: an error after the
    ranks' agreement is raised as usual (the communicator's Abort is never called)."""
    import backprop as bp
    from backprop.distributed import abort_on_error

    class OneRank(LocalComm):
        def Abort(self, code):  # would end the test process
            raise AssertionError("Abort called with one rank")

    def schedule(epoch):
        if epoch == 1:
            raise RuntimeError("fails on purpose in epoch 1")
        return 1e-2

    net = bp.MLP([3, 4, 2], dtype="float64", seed=0)
    X, Y = np.zeros((8, 3)), np.zeros((8, 2))
    with pytest.raises(RuntimeError, match="fails on purpose in epoch 1"):
        fit(net, X, Y, epochs=3, comm=OneRank(), lr_schedule=schedule)
    with pytest.raises(KeyError, match="inside the block"):
        with abort_on_error(OneRank()):
            raise KeyError("inside the block")
