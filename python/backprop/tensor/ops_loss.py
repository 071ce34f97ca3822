"""softmax, log_softmax and the library's four losses as Tensor functions (the MLP's definitions).

    sse            L = ½ Σ (F − Y)²                       F.grad += L.grad (F − Y)
    mse            L = (1/N) Σ (F − Y)²                   F.grad += L.grad 2 (F − Y) / N
    cross_entropy  L = −(1/n) Σ_i Σ_j Y_ij log softmax(F_i)_j
                                                          F.grad += L.grad (softmax(F) − Y) / n
                   (Y one-hot or class probabilities, each row summing to 1; integer labels are
                   turned into one-hot rows)
    bce            L = (1/N) Σ [softplus(F) − Y F]        F.grad += L.grad (sigmoid(F) − Y) / N
                   (binary cross-entropy on the logits F)

With a constant target and a 2-D F, a loss is one node whose forward is the backend's ``loss``
kernel (value and G = dL/dF together) and whose backward is L.grad G; under create_graph that
backward is written with Tensor operations. A target that requires grad, or an F that is not
2-D, takes the definition above written with Tensor operations.
"""

from __future__ import annotations

import numpy as np

from .core import Tensor, _fail, as_tensor, backward_of, check_tensor, kernels, result, to_backend
from .ops_elementwise import abs, exp, log, relu, sigmoid
from .ops_reduce import mean, sum


def _max_const(A, axis):
    return np.max(A.value, axis=axis, keepdims=True)


def softmax(A, axis=-1):
    """P = exp(A − max) / Σ exp(A − max) along ``axis``.
    backprop: A.grad[i] += P[i] (P.grad[i] − Σ_j P.grad[j] P[j])."""
    A = check_tensor(A, "softmax")
    Z = A.value - _max_const(A, axis)
    E = np.exp(Z)
    return result(E / E.sum(axis=axis, keepdims=True), A.backend, (A,), _softmax_backward, axis)


@backward_of("softmax")
def _softmax_backward(out, g, graph):
    axis = out._saved
    P = out if graph else out.value
    return (P * (g - (g * P).sum(axis=axis, keepdims=True)),)


def log_softmax(A, axis=-1):
    """Y = A − max − log Σ exp(A − max) along ``axis``.
    backprop: A.grad[i] += Y.grad[i] − exp(Y[i]) Σ_j Y.grad[j]."""
    A = check_tensor(A, "log_softmax")
    Z = A.value - _max_const(A, axis)
    return result(Z - np.log(np.exp(Z).sum(axis=axis, keepdims=True)), A.backend, (A,),
                  _log_softmax_backward, axis)


@backward_of("log_softmax")
def _log_softmax_backward(out, g, graph):
    axis = out._saved
    if graph:
        return (g - exp(out) * g.sum(axis=axis, keepdims=True),)
    return (g - np.exp(out.value) * g.sum(axis=axis, keepdims=True),)


def softplus(A):
    """log(1 + exp A), computed stably as relu(A) + log(1 + exp(−|A|))."""
    return relu(A) + log(1.0 + exp(-abs(A)))


# ---- the losses -----------------------------------------------------------------------------

def _target(F, Y, name):
    F = check_tensor(F, name)
    if name == "cross_entropy" and not isinstance(Y, Tensor):
        labels = np.asarray(Y) if isinstance(Y, (list, tuple, np.ndarray)) else None
        if labels is not None and labels.dtype.kind in "iu":
            if F.value.ndim != 2 or labels.shape != (F.value.shape[0],):
                _fail(name, ValueError, f"integer labels of shape {labels.shape} for outputs of "
                                        f"shape {F.shape} (one label per row)")
            k = F.value.shape[1]
            if labels.size and (labels.min() < 0 or labels.max() >= k):
                _fail(name, ValueError, f"labels must lie in 0..{k - 1}")
            Y = np.eye(k, dtype=F.value.dtype)[labels]
    Y = as_tensor(Y, F, name)
    if Y.value.shape != F.value.shape:
        _fail(name, ValueError, f"targets of shape {Y.shape} for outputs of shape {F.shape}")
    return F, Y


def _loss(name, F, Y):
    F, Y = _target(F, Y, name)
    if F.value.ndim != 2 or Y.requires_grad or F.value.size == 0:
        return _DEFINITIONS[name](F, Y)
    f = F.value if F.value.flags.c_contiguous else F.backend.asarray(F.value, F.value.dtype)
    y = Y.value if Y.value.flags.c_contiguous else Y.backend.asarray(Y.value, Y.value.dtype)
    value, G = kernels(F).loss(name, f, y)
    value = to_backend(F.backend, value, F.value.dtype)
    return result(value, F.backend, (F, Y), _LOSS_BACKWARD[name], G)


def sse(F, Y):
    """L = ½ Σ (F − Y)², a scalar Tensor.   backprop: F.grad += L.grad (F − Y)."""
    return _loss("sse", F, Y)


def mse(F, Y):
    """L = (1/N) Σ (F − Y)², N the number of entries.   backprop: F.grad += L.grad 2 (F − Y) / N."""
    return _loss("mse", F, Y)


def cross_entropy(F, Y):
    """L = −(1/n) Σ Y log softmax(F) over the n rows (Y one-hot, probabilities or integer labels).
    backprop: F.grad += L.grad (softmax(F) − Y) / n."""
    return _loss("cross_entropy", F, Y)


def bce(F, Y):
    """L = (1/N) Σ [softplus(F) − Y F] (F logits, Y in [0, 1]).   backprop: F.grad += L.grad (sigmoid(F) − Y) / N."""
    return _loss("bce", F, Y)


def _gradient_tensor(name, F, Y):
    """G = dL/dF written with Tensor operations (the backward under create_graph)."""
    if name == "sse":
        return F - Y
    if name == "mse":
        return (F - Y) * (2.0 / F.value.size)
    if name == "cross_entropy":
        return (softmax(F, -1) - Y) * (1.0 / F.value.shape[0])
    return (sigmoid(F) - Y) * (1.0 / F.value.size)


def _make_loss_backward(name):
    @backward_of(name)
    def backward(out, g, graph):
        if graph:
            F, Y = out._parents
            return (g * _gradient_tensor(name, F, Y), None)
        return (out._saved * g, None)
    return backward


_LOSS_BACKWARD = {name: _make_loss_backward(name) for name in ("sse", "mse", "cross_entropy", "bce")}

_DEFINITIONS = {
    "sse": lambda F, Y: 0.5 * sum((F - Y) * (F - Y)),
    "mse": lambda F, Y: mean((F - Y) * (F - Y)),
    "cross_entropy": lambda F, Y: sum(Y * log_softmax(F, -1)) * (-1.0 / F.value.shape[0]),
    "bce": lambda F, Y: mean(softplus(F) - Y * F),
}

LOSSES = {"sse": sse, "mse": mse, "cross_entropy": cross_entropy, "bce": bce}


def loss(name, F, Y):
    """The loss called ``name`` ("sse", "mse", "cross_entropy", "bce") of outputs F against Y."""
    if name not in LOSSES:
        raise ValueError(f"loss: unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    return LOSSES[name](F, Y)


def _install():
    Tensor.softmax = softmax
    Tensor.log_softmax = log_softmax


_install()
