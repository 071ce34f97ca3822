"""AdamW, gradient clipping, per-step schedules, ReduceLROnPlateau, MLP.reset_parameters."""

import numpy as np
import pytest

import backprop as bp
from backprop.optim import AdamW, ReduceLROnPlateau, clip_grad_norm
from backprop.train import Trainer

BACKENDS = [b for b in ("numpy", "cpu") if b in bp.available_backends()]


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, np.tanh(X @ rng.normal(size=(3, 2)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_adamw_is_decay_then_adam(backend):
    X, Y = _data()
    net = bp.MLP([3, 5, 2], backend=backend, dtype="float64", seed=0)
    ref = net.copy()
    trainer = Trainer(net, "mse", AdamW(lr=0.01, betas=(0.8, 0.9), eps=1e-7, weight_decay=0.5))
    assert not trainer.fused  # no native path knows AdamW
    trainer.step(net.input_array(X), net.target_array(Y, 40, "mse"))
    _, grads = ref.loss_and_grad(X, Y, loss="mse")
    for W0, g, W1 in zip(ref.weights, grads.weights, net.weights):
        m, v = 0.2 * g, 0.1 * g * g
        expected = W0 * (1 - 0.01 * 0.5) - 0.01 * (m / 0.2) / (np.sqrt(v / 0.1) + 1e-7)
        np.testing.assert_allclose(W1, expected, rtol=1e-10)
    assert isinstance(bp.optim.get_optimizer("adamw", 0.1), AdamW)


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_grad_norm(backend):
    X, Y = _data()
    net = bp.MLP([3, 5, 2], backend=backend, dtype="float64", seed=0)
    start = net.copy()
    _, grads = start.loss_and_grad(X, Y, loss="mse")
    norm = np.sqrt(sum((g ** 2).sum() for g in grads.weights + grads.biases))
    net.fit(X, Y, optimizer=bp.optim.SGD(lr=1.0), epochs=1, clip_grad_norm=norm / 10,
            shuffle=False)
    moved = np.sqrt(sum(((a - b) ** 2).sum() for a, b in
                        zip(net.weights + net.biases, start.weights + start.biases)))
    np.testing.assert_allclose(moved, norm / 10, rtol=1e-5)
    free = start.copy()
    free.fit(X, Y, optimizer=bp.optim.SGD(lr=1.0), epochs=1, clip_grad_norm=norm * 10)
    plain = start.copy()
    plain.fit(X, Y, optimizer=bp.optim.SGD(lr=1.0), epochs=1, fused=False)
    for a, b in zip(free.weights, plain.weights):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    t = bp.Tensor(np.zeros(2), requires_grad=True, backend=backend)
    t.grad = t.backend.asarray(np.array([3.0, 4.0]), np.float64)
    unused = bp.Tensor(np.zeros(3), requires_grad=True, backend=backend)
    assert clip_grad_norm([t, unused], 1.0) == 5.0
    np.testing.assert_allclose(t.grad, [0.6, 0.8], rtol=1e-5)
    assert not unused.has_grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_schedule_per_step(backend):
    X, Y = _data()
    net = bp.MLP([3, 5, 2], backend=backend, dtype="float64", seed=0)
    three = net.copy()
    seen = []

    def schedule(step):
        seen.append(step)
        return 0.1 if step < 3 else 0.0

    history = net.fit(X, Y, optimizer="sgd", epochs=2, batch_size=10, shuffle=False,
                      lr_schedule=schedule, lr_schedule_per="step")
    assert seen[-8:] == list(range(8)) and history.lr[-1] == 0.0
    trainer = Trainer(three, "mse", bp.optim.SGD(lr=0.1))
    Xd, Yd = three.input_array(X), three.target_array(Y, 40, "mse")
    for start in range(0, 30, 10):
        trainer.step(Xd[start:start + 10], Yd[start:start + 10])
    for a, b in zip(net.weights, three.weights):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(ValueError, match="lr_schedule_per"):
        net.fit(X, Y, lr_schedule_per="batch")


def test_reduce_lr_on_plateau():
    s = ReduceLROnPlateau(factor=0.5, patience=2, min_lr=0.1, lr=1.0)
    lrs = []
    for value in [5, 4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 3]:
        s.step(value)
        lrs.append(s(0))
    assert lrs == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.125]
    for _ in range(10):
        s.step(3)
    assert s(0) == 0.1  # min_lr
    X, Y = _data()
    net = bp.MLP([3, 5, 2], backend="numpy", seed=0)
    plateau = ReduceLROnPlateau(factor=0.5, patience=0)
    history = net.fit(X, Y, optimizer="sgd", lr=5.0, epochs=30, lr_schedule=plateau,
                      validation_data=(X, Y))
    assert history.lr[0] == 5.0 and history.lr[-1] < 5.0
    assert all(b <= a for a, b in zip(history.lr, history.lr[1:]))
    with pytest.raises(ValueError):
        ReduceLROnPlateau(monitor="accuracy")


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_parameters(backend):
    X, Y = _data()
    net = bp.MLP([3, 5, 2], backend=backend, seed=4)
    fresh = [w.copy() for w in net.weights]
    net.fit(X, Y, epochs=3)
    assert not np.array_equal(net.weights[0], fresh[0])
    net.reset_parameters(seed=4)
    for a, b in zip(net.weights, fresh):
        np.testing.assert_array_equal(a, b)
    assert all(not b.any() for b in net.biases)
