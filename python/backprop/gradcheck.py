"""Finite-difference gradient check: the judge of every backend's backward pass.

For each parameter entry θ (and each input entry of X) the central difference

    (L(θ + ε) - L(θ - ε)) / 2ε

is compared with the analytic gradient from ``loss_and_grad``. The error of one array is the
relative error of its whole gradient, ‖g_analytic - g_numeric‖ / max(‖g_analytic‖ + ‖g_numeric‖, tiny);
the result is the largest over all arrays.
"""

from __future__ import annotations

import numpy as np

from . import _checks


def _relative_error(analytic, numeric):
    scale = np.linalg.norm(analytic) + np.linalg.norm(numeric)
    return float(np.linalg.norm(analytic - numeric) / max(scale, 1e-300))


def numeric_gradient(f, param, eps):
    """(f(θ + ε e_i) - f(θ - ε e_i)) / 2ε for every entry i of ``param``, which f() reads.

    ``param`` is changed in place one entry at a time and restored.
    """
    out = np.zeros_like(param)
    for index in np.ndindex(param.shape):
        saved = param[index]
        param[index] = saved + eps
        plus = f()
        param[index] = saved - eps
        minus = f()
        param[index] = saved
        out[index] = (plus - minus) / (2 * eps)
    return out


def gradcheck(net, X, Y, loss="sse", eps=1e-6, check_inputs=True, return_details=False):
    """Max relative error of ``net``'s analytic gradients against central finite differences.

    The check runs in float64 on a copy of ``net`` on the same backend (a float32 network is
    promoted), so it judges the backend's arithmetic, not rounding. With ``return_details``
    the errors of each array are returned too, as a dict {"W0": ..., "b0": ..., "X": ...}.
    """
    loss = _checks.check_loss(loss)
    net64 = net.to(net.backend, dtype="float64")
    X = np.array(_checks.check_inputs(X, net.layers[0]), dtype=np.float64)
    _, grads = net64.loss_and_grad(X, Y, loss)
    weights, biases = net64.weights, net64.biases

    def loss_at_params():
        net64.set_params(weights, biases)
        return net64.loss_and_grad(X, Y, loss)[0]

    errors = {}
    for l in range(net64.n_layers):
        errors[f"W{l}"] = _relative_error(grads.weights[l], numeric_gradient(loss_at_params, weights[l], eps))
        errors[f"b{l}"] = _relative_error(grads.biases[l], numeric_gradient(loss_at_params, biases[l], eps))
    if check_inputs:
        net64.set_params(weights, biases)
        errors["X"] = _relative_error(
            grads.X, numeric_gradient(lambda: net64.loss_and_grad(X, Y, loss)[0], X, eps))
    worst = max(errors.values())
    return (worst, errors) if return_details else worst
