"""The judge: float64 central differences against the analytic gradients, on every backend."""

import numpy as np
import pytest

import backprop as bp
from backprop.backends import ACTIVATIONS, LOSSES
from backprop.backends.numpy_backend import NumpyBackend


def data(loss, rng, n=6, p=3, k=2):
    X = rng.normal(size=(n, p))
    if loss == "cross_entropy":
        Y = rng.integers(0, k, size=n)
    elif loss == "bce":
        Y = rng.random((n, k))
    else:
        Y = rng.normal(size=(n, k))
    return X, Y


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradients_match_finite_differences(backend, activation, loss, rng):
    net = bp.MLP([3, 5, 4, 2], activation=activation, backend=backend, dtype="float64", seed=3)
    X, Y = data(loss, rng)
    error, details = bp.gradcheck(net, X, Y, loss=loss, return_details=True)
    assert set(details) == {"W0", "b0", "W1", "b1", "W2", "b2", "X"}
    assert error < 1e-6, details


@pytest.mark.parametrize("output_activation", ["sigmoid", "tanh"])
def test_gradients_with_output_activation_and_mixed_layers(backend, output_activation, rng):
    net = bp.MLP([2, 4, 3, 3], activation=["relu", "sigmoid"], output_activation=output_activation,
                 backend=backend, dtype="float64", seed=1)
    X, Y = data("mse", rng, p=2, k=3)
    assert bp.gradcheck(net, X, Y, loss="mse") < 1e-6


def test_gradcheck_promotes_float32(rng):
    net = bp.MLP([3, 4, 2], dtype="float32", seed=0)
    X, Y = data("sse", rng)
    assert bp.gradcheck(net, X, Y) < 1e-6
    assert net.dtype == np.float32  # the network itself is untouched


class RaissiCodeSlip(NumpyBackend):
    """The slip of the tutorial's public code: dW from the pre-activation H instead of A."""

    name = "slip"

    def _dense_backward(self, G, A_prev, W, activation_prev, dW, db, G_prev):
        super()._dense_backward(G, A_prev, W, activation_prev, dW, db, G_prev)
        if activation_prev == "tanh":
            H_prev = np.arctanh(np.clip(A_prev, -0.999999, 0.999999))
            dW[...] = H_prev.T @ G


def test_gradcheck_catches_a_wrong_weight_gradient(rng):
    net = bp.MLP([3, 5, 4, 2], activation="tanh", backend=RaissiCodeSlip(), dtype="float64", seed=3)
    X, Y = data("sse", rng)
    error, details = bp.gradcheck(net, X, Y, return_details=True)
    assert error > 1e-3
    assert details["W0"] < 1e-6  # the first layer's input is X, not a tanh output
