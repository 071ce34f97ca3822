"""A callable loss with standardize=True sees the model's inputs standardized once, as predict."""

import numpy as np
import pytest

import backprop as bp

BACKENDS = [b for b in ("numpy", "cpu") if b in bp.available_backends()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_callable_loss_with_standardize_trains_what_predict_computes(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(5.0, 3.0, (200, 2))
    Y = np.sin(X[:, :1] / 3) + 0.1 * X[:, 1:]
    net = bp.MLP([2, 16, 1], backend=backend, dtype="float64", seed=0)
    history = net.fit(X, Y, loss=lambda F, T: bp.mse(F, T), optimizer="adam", lr=1e-2,
                      epochs=300, standardize=True, shuffle=False, validation_data=(X, Y))
    true = float(np.mean((net.predict(X) - Y) ** 2))
    # the loss of the last epoch is taken before its update; the validation loss after it
    assert history.val_loss[-1] == pytest.approx(true, rel=1e-9)
    assert true < 0.05


@pytest.mark.parametrize("backend", BACKENDS)
def test_net_call_and_derivatives_standardize_as_predict(backend):
    """A float32 model standardizes in float64 everywhere: inputs far from 0 (offset 1e6) give
    net(X), derivatives' u and predict within float32 rounding of one another."""
    rng = np.random.default_rng(1)
    X = 1e6 + rng.normal(0.0, 1.0, (64, 2))
    net = bp.MLP([2, 8, 1], backend=backend, dtype="float32", seed=0)
    net.standardizer = bp.Standardizer().fit(X)
    want = net.predict(X)
    np.testing.assert_allclose(net(X).numpy(), want, rtol=1e-5, atol=1e-5)
    u, = net.derivatives(X)
    np.testing.assert_allclose(u.numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_net_call_and_derivatives_refuse_values_beyond_float32(backend):
    net = bp.MLP([2, 8, 1], backend=backend, dtype="float32", seed=0)
    X = np.array([[1e39, 0.0]])
    for call in (lambda: net(X), lambda: net.derivatives(X), lambda: net.predict(X)):
        with pytest.raises(ValueError, match="float32"):
            call()


def test_callable_loss_refuses_a_1d_target_for_one_output():
    """F (n x 1) - Y (n,) would broadcast to n x n: refused before training, model unchanged."""
    X = np.linspace(-1, 1, 30).reshape(-1, 1)
    net = bp.MLP([1, 4, 1], dtype="float64", seed=0)
    before = net.weights
    with pytest.raises(ValueError, match="broadcast to n x n"):
        net.fit(X, np.sin(X[:, 0]), loss=lambda F, T: bp.mse(F, T), epochs=2)
    for a, b in zip(before, net.weights):
        np.testing.assert_array_equal(a, b)
    net.fit(X, np.sin(X), loss=lambda F, T: bp.mse(F, T), epochs=2)  # a column is fine
