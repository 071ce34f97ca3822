"""User objectives: a training loop on Tensors writes the model's gradient buffers and the
library's optimizer follows; a custom loss equal to a built-in one trains to the same parameters."""

import numpy as np
import pytest

import backprop as bp
from backprop import objective as obj
from backprop.optim import OptimizerState
from backprop.train import Trainer


def _custom_mse(F, Y):
    R = F - Y
    return (R * R).mean()


def _custom_sse(F, Y):
    return 0.5 * ((F - Y) ** 2).sum()


def _train_both(backend, dtype, optimizer, builtin, custom, rng, steps=25):
    X, Y = rng.normal(size=(16, 3)), rng.normal(size=(16, 2))
    a = bp.MLP([3, 6, 6, 2], activation="tanh", backend=backend, dtype=dtype, seed=4)
    b = a.copy()
    trainer = Trainer(a, builtin, optimizer(), fused=False)
    Xb, Yb = a.input_array(X), a.target_array(Y, 16, builtin)
    state = OptimizerState(optimizer(), b.backend, b.params)
    losses_a, losses_b = [], []
    for start in range(steps):
        rows = slice((start * 4) % 16, (start * 4) % 16 + 4)
        losses_a.append(trainer.step(Xb[rows], Yb[rows]))
        losses_b.append(obj.step(b, state, obj.loss_objective(custom, Xb[rows], Yb[rows])))
    return a, b, losses_a, losses_b


@pytest.mark.parametrize("builtin,custom", [("mse", _custom_mse), ("sse", _custom_sse)])
@pytest.mark.parametrize("optimizer", [lambda: bp.optim.SGD(lr=0.05, momentum=0.9),
                                       lambda: bp.optim.Adam(lr=1e-2)], ids=["momentum", "adam"])
def test_custom_loss_trains_to_the_same_bits_on_numpy(builtin, custom, optimizer, rng):
    a, b, la, lb = _train_both("numpy", "float64", optimizer, builtin, custom, rng)
    for wa, wb in zip(a.weights + a.biases, b.weights + b.biases):
        assert np.array_equal(wa, wb)
    np.testing.assert_allclose(la, lb, rtol=1e-12)


def test_custom_loss_trains_like_the_builtin_everywhere(backend, dtype, rng):
    a, b, la, lb = _train_both(backend, dtype, lambda: bp.optim.Adam(lr=1e-2), "mse", _custom_mse, rng)
    tol = 1e-4 if dtype == "float32" else 1e-10
    for wa, wb in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_allclose(wb, wa, rtol=tol, atol=tol)


def test_objective_with_several_calls_and_an_input_derivative(backend, rng):
    """A physics-informed objective: data misfit + the residual of u'' = -u at collocation points."""
    net = bp.MLP([1, 6, 6, 1], backend=backend, dtype="float64", seed=0)
    Xd, Yd = rng.uniform(-1, 1, (4, 1)), rng.normal(size=(4, 1))
    Xc = rng.uniform(-1, 1, (5, 1))

    def objective(net):
        x = bp.Tensor(Xc, requires_grad=True, backend=backend)
        u = net(x)
        du = bp.grad(u.sum(), x, create_graph=True)
        d2u = bp.grad(du.sum(), x, create_graph=True)
        return bp.mse(net(Xd), Yd) + ((d2u + u) ** 2).mean()

    value = obj.value_and_grads(net, objective)
    grads = [np.array(net.backend.to_numpy(g)) for g in net.grads]
    eps = 1e-6
    W, B = net.weights, net.biases
    for l in (0, 2):
        for idx in [(0, 0), (0, 3)] if l == 0 else [(2, 0), (5, 0)]:
            plus = [w.copy() for w in W]
            plus[l][idx] += eps
            net.set_params(plus, B)
            fp = float(objective(net).item())
            plus[l][idx] -= 2 * eps
            net.set_params(plus, B)
            fm = float(objective(net).item())
            net.set_params(W, B)
            assert grads[2 * l][idx] == pytest.approx((fp - fm) / (2 * eps), rel=1e-5, abs=1e-8)
    assert value == pytest.approx(float(objective(net).item()), rel=1e-12)


def test_unused_parameters_get_zero_and_bad_objectives_are_named(rng):
    net = bp.MLP([2, 3, 1], backend="numpy", dtype="float64", seed=0)
    for g in net.grads:
        g.fill(7.0)
    value = obj.value_and_grads(net, lambda n: (n.parameters()[1] ** 2).sum())
    assert value == 0.0
    assert all(not np.any(g) for i, g in enumerate(net.grads) if i != 1)
    with pytest.raises(ValueError, match="objective 'vector'.*scalar"):
        def vector(n):
            return n(np.ones((2, 2)))
        obj.value_and_grads(net, vector)
    with pytest.raises(TypeError, match="returned a float"):
        obj.value_and_grads(net, lambda n: 1.0)
    with pytest.raises(TypeError, match="loss must be a callable"):
        obj.loss_objective("mse", np.ones((2, 2)), np.ones((2, 1)))


@pytest.mark.parametrize("shuffle,batch_size", [(False, None), (True, 5)])
def test_fit_with_a_callable_loss_gives_the_builtin_bits_on_numpy(shuffle, batch_size, rng):
    X, Y = rng.normal(size=(16, 3)), rng.normal(size=(16, 2))
    a = bp.MLP([3, 6, 2], backend="numpy", dtype="float64", seed=1)
    b = a.copy()
    ha = a.fit(X, Y, loss="mse", optimizer="adam", lr=1e-2, epochs=6, batch_size=batch_size,
               shuffle=shuffle, seed=3, fused=False, validation_data=(X[:4], Y[:4]))
    hb = b.fit(X, Y, loss=_custom_mse, optimizer="adam", lr=1e-2, epochs=6, batch_size=batch_size,
               shuffle=shuffle, seed=3, validation_data=(X[:4], Y[:4]))
    for wa, wb in zip(a.weights + a.biases, b.weights + b.biases):
        assert np.array_equal(wa, wb)
    np.testing.assert_allclose(hb.loss, ha.loss, rtol=1e-12)
    np.testing.assert_allclose(hb.val_loss, ha.val_loss, rtol=1e-12)


def test_trainer_with_an_objective_and_its_bad_uses(rng):
    net = bp.MLP([1, 5, 1], backend="numpy", dtype="float64", seed=0)
    X = net.input_array(rng.uniform(-1, 1, (8, 1)))
    target = np.sin(3 * np.asarray(X))

    def objective(net):
        return ((net(X) - bp.Tensor(target)) ** 2).mean()

    trainer = Trainer(net, objective=objective, optimizer=bp.optim.Adam(lr=2e-2))
    first = trainer.step(None, None)
    for _ in range(60):
        last = trainer.step(None, None)
    assert last < 0.5 * first and trainer.state.step == 61
    with pytest.raises(ValueError, match="a loss or an objective, not both"):
        Trainer(net, "mse", objective=objective)
    with pytest.raises(ValueError, match="needs a loss"):
        Trainer(net)
    with pytest.raises(ValueError, match="fused=True: a callable loss"):
        Trainer(net, _custom_mse, "sgd", fused=True)
    with pytest.raises(ValueError, match="dropout is not available"):
        bp.MLP([1, 5, 5, 1]).fit(np.ones((4, 1)), np.ones((4, 1)), loss=_custom_mse, dropout=0.5)
