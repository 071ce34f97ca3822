"""The losses and optimizers are defined exactly as their PyTorch counterparts (when installed)."""

import numpy as np
import pytest

import backprop as bp
from backprop.backends import get_backend

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("loss", ["sse", "mse", "cross_entropy", "bce"])
def test_losses_match_pytorch(loss, rng):
    F = rng.normal(size=(7, 4)) * 3
    labels = rng.integers(0, 4, size=7)
    Y = {"cross_entropy": np.eye(4)[labels], "bce": rng.random((7, 4))}.get(loss, rng.normal(size=(7, 4)))
    value, G = get_backend("numpy").loss(loss, F, Y)
    Ft = torch.tensor(F, requires_grad=True)
    target = torch.tensor(labels) if loss == "cross_entropy" else torch.tensor(Y)
    fn = {"sse": lambda f, y: 0.5 * ((f - y) ** 2).sum(), "mse": torch.nn.MSELoss(),
          "cross_entropy": torch.nn.CrossEntropyLoss(), "bce": torch.nn.BCEWithLogitsLoss()}[loss]
    out = fn(Ft, target)
    out.backward()
    assert value == pytest.approx(out.item(), rel=1e-12)
    np.testing.assert_allclose(G, Ft.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("make", [
    (lambda: bp.optim.SGD(lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    (lambda: bp.optim.SGD(lr=0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    (lambda: bp.optim.SGD(lr=0.1, momentum=0.9, nesterov=True),
     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True)),
    (lambda: bp.optim.Adam(lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
])
def test_optimizers_match_pytorch(make, rng):
    ours, theirs = make
    p0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(5)]
    param = p0.copy()
    state = ours().state(get_backend("numpy"), [param])
    pt = torch.tensor(p0, requires_grad=True)
    opt = theirs([pt])
    for g in grads:
        state.apply(get_backend("numpy"), [param], [g])
        pt.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(param, pt.detach().numpy(), rtol=1e-12)
