"""Elementwise operations: + − * / ** and negation with numpy broadcasting, the math functions and
the activations. Each forward is followed by its backward; the backprop loops are in the
docstrings (``i`` runs over the broadcast output; ``i_A`` is i folded onto A's shape, so a
broadcast operand sums the gradients of every output it fed).

With ``graph=False`` a backward works on arrays; with ``graph=True`` (create_graph) on Tensors,
with the same expression where the two coincide.
"""

from __future__ import annotations

import numpy as np

from ..backends.base import LEAKY_SLOPE
from .core import Tensor, backward_of, check_tensor, kernels, pair, result
from .ops_reduce import _sum_to


def _args(out, graph):
    """The operation's inputs as Tensors (graph) or as their values."""
    if graph:
        return out._parents
    return [p.value for p in out._parents]


# ---- + − * / ** ---------------------------------------------------------------------------

def add(A, B):
    """Y[i] = A[i_A] + B[i_B].   backprop: A.grad[i_A] += Y.grad[i];  B.grad[i_B] += Y.grad[i]."""
    A, B = pair(A, B, "add")
    return result(A.value + B.value, A.backend, (A, B), _add_backward)


@backward_of("add")
def _add_backward(out, g, graph):
    A, B = out._parents
    return (_sum_to(g, A.value.shape, graph) if A.requires_grad else None,
            _sum_to(g, B.value.shape, graph) if B.requires_grad else None)


def sub(A, B):
    """Y[i] = A[i_A] − B[i_B].   backprop: A.grad[i_A] += Y.grad[i];  B.grad[i_B] −= Y.grad[i]."""
    A, B = pair(A, B, "sub")
    return result(A.value - B.value, A.backend, (A, B), _sub_backward)


@backward_of("sub")
def _sub_backward(out, g, graph):
    A, B = out._parents
    return (_sum_to(g, A.value.shape, graph) if A.requires_grad else None,
            _sum_to(-g, B.value.shape, graph) if B.requires_grad else None)


def mul(A, B):
    """Y[i] = A[i_A] B[i_B].   backprop: A.grad[i_A] += Y.grad[i] B[i_B];  B.grad[i_B] += Y.grad[i] A[i_A]."""
    A, B = pair(A, B, "mul")
    return result(A.value * B.value, A.backend, (A, B), _mul_backward)


@backward_of("mul")
def _mul_backward(out, g, graph):
    A, B = out._parents
    a, b = _args(out, graph)
    return (_sum_to(g * b, A.value.shape, graph) if A.requires_grad else None,
            _sum_to(g * a, B.value.shape, graph) if B.requires_grad else None)


def div(A, B):
    """Y[i] = A[i_A] / B[i_B].   backprop: A.grad[i_A] += Y.grad[i] / B[i_B];
    B.grad[i_B] −= Y.grad[i] A[i_A] / B[i_B]²."""
    A, B = pair(A, B, "div")
    return result(A.value / B.value, A.backend, (A, B), _div_backward)


@backward_of("div")
def _div_backward(out, g, graph):
    A, B = out._parents
    a, b = _args(out, graph)
    return (_sum_to(g / b, A.value.shape, graph) if A.requires_grad else None,
            _sum_to(-g * a / (b * b), B.value.shape, graph) if B.requires_grad else None)


def neg(A):
    """Y[i] = −A[i].   backprop: A.grad[i] −= Y.grad[i]."""
    A = check_tensor(A, "neg")
    return result(-A.value, A.backend, (A,), _neg_backward)


@backward_of("neg")
def _neg_backward(out, g, graph):
    return (-g,)


def power(A, B):
    """Y[i] = A[i_A] ** B[i_B].
    backprop: A.grad[i_A] += Y.grad[i] B[i_B] A[i_A]**(B[i_B]−1);  B.grad[i_B] += Y.grad[i] Y[i] log A[i_A].

    A Python number as the exponent is a constant (``x ** 2``), so negative bases are fine."""
    if isinstance(A, Tensor) and isinstance(B, (int, float)) and not isinstance(B, bool):
        return result(A.value ** B, A.backend, (A,), _power_scalar_backward, float(B))
    A, B = pair(A, B, "pow")
    return result(A.value ** B.value, A.backend, (A, B), _power_backward)


@backward_of("pow")
def _power_scalar_backward(out, g, graph):
    p = out._saved
    a = out._parents[0] if graph else out._parents[0].value
    if p == 0.0:
        return (g * 0.0,)
    if p == 1.0:
        return (g,)
    if p == 2.0:
        return (g * (2.0 * a),)
    return (g * (p * a ** (p - 1.0)),)


@backward_of("pow")
def _power_backward(out, g, graph):
    A, B = out._parents
    a, b = _args(out, graph)
    y = out if graph else out.value
    ga = _sum_to(g * b * a ** (b - 1.0), A.value.shape, graph) if A.requires_grad else None
    gb = _sum_to(g * y * (log(a) if graph else np.log(a)), B.value.shape, graph) \
        if B.requires_grad else None
    return ga, gb


def astype(A, dtype):
    """Y[i] = A[i] in another float dtype.   backprop: A.grad[i] += Y.grad[i] (cast back)."""
    A = check_tensor(A, "astype")
    dtype = np.dtype(dtype)
    if dtype == A.value.dtype:
        return A
    return result(A.value.astype(dtype), A.backend, (A,), _astype_backward, A.value.dtype)


@backward_of("astype")
def _astype_backward(out, g, graph):
    return (astype(g, out._saved) if graph else g.astype(out._saved),)


# ---- math functions -----------------------------------------------------------------------

def _unary(name, fn, A):
    A = check_tensor(A, name)
    return result(fn(A.value), A.backend, (A,), _UNARY_BACKWARD[name])


def exp(A):
    """Y[i] = exp A[i].   backprop: A.grad[i] += Y.grad[i] Y[i]."""
    return _unary("exp", np.exp, A)


def log(A):
    """Y[i] = log A[i].   backprop: A.grad[i] += Y.grad[i] / A[i]."""
    return _unary("log", np.log, A)


def sin(A):
    """Y[i] = sin A[i].   backprop: A.grad[i] += Y.grad[i] cos A[i]."""
    return _unary("sin", np.sin, A)


def cos(A):
    """Y[i] = cos A[i].   backprop: A.grad[i] −= Y.grad[i] sin A[i]."""
    return _unary("cos", np.cos, A)


def sqrt(A):
    """Y[i] = √A[i].   backprop: A.grad[i] += Y.grad[i] / (2 Y[i])."""
    return _unary("sqrt", np.sqrt, A)


def abs(A):  # noqa: A001 (the name PyTorch users expect)
    """Y[i] = |A[i]|.   backprop: A.grad[i] += Y.grad[i] sign A[i]."""
    return _unary("abs", np.abs, A)


def _exp_backward(out, g, graph):
    return (g * (out if graph else out.value),)


def _log_backward(out, g, graph):
    return (g / (out._parents[0] if graph else out._parents[0].value),)


def _sin_backward(out, g, graph):
    a = out._parents[0]
    return (g * (cos(a) if graph else np.cos(a.value)),)


def _cos_backward(out, g, graph):
    a = out._parents[0]
    return (-g * (sin(a) if graph else np.sin(a.value)),)


def _sqrt_backward(out, g, graph):
    return (g / (2.0 * (out if graph else out.value)),)


def _abs_backward(out, g, graph):
    return (g * np.sign(out._parents[0].value),)  # sign is a constant (its derivative is 0)


_UNARY_BACKWARD = {name: backward_of(name)(fn) for name, fn in (
    ("exp", _exp_backward), ("log", _log_backward), ("sin", _sin_backward),
    ("cos", _cos_backward), ("sqrt", _sqrt_backward), ("abs", _abs_backward))}


# ---- activations (the backend's kernels; derivatives from the output Y) --------------------

def _activation(name, A):
    A = check_tensor(A, name)
    return result(kernels(A).activation_forward(_contiguous(A), name), A.backend, (A,),
                  _ACTIVATION_BACKWARD[name])


def _contiguous(A):
    v = A.value
    return v if v.flags.c_contiguous else A.backend.asarray(v, v.dtype)


def tanh(A):
    """Y[i] = tanh A[i].   backprop: A.grad[i] += Y.grad[i] (1 − Y[i]²)."""
    return _activation("tanh", A)


def sigmoid(A):
    """Y[i] = 1 / (1 + exp −A[i]).   backprop: A.grad[i] += Y.grad[i] Y[i] (1 − Y[i])."""
    return _activation("sigmoid", A)


def relu(A):
    """Y[i] = max(A[i], 0).   backprop: A.grad[i] += Y.grad[i] [Y[i] > 0]."""
    return _activation("relu", A)


def leaky_relu(A):
    """Y[i] = A[i] if A[i] > 0 else 0.01 A[i].   backprop: A.grad[i] += Y.grad[i] (1 if Y[i] > 0 else 0.01)."""
    return _activation("leaky_relu", A)


def activation(A, name):
    """Y = act(A) by the activation's name ("tanh", "sigmoid", "relu", "leaky_relu", "identity")."""
    if name == "identity":
        return check_tensor(A, "activation")
    if name not in _ACTIVATION_BACKWARD:
        raise ValueError(f"activation: unknown activation {name!r}; valid: tanh, sigmoid, relu, "
                         "leaky_relu, identity")
    return _activation(name, A)


def activation_derivative(Y, name):
    """act'(as a function of the output Y), for a Tensor or an array Y: 1 − Y², Y (1 − Y), the
    masks of relu and leaky_relu (constants), or 1. Used by the backward passes under create_graph."""
    if name == "tanh":
        return 1.0 - Y * Y
    if name == "sigmoid":
        return Y * (1.0 - Y)
    y = Y.value if isinstance(Y, Tensor) else Y
    if name == "relu":
        return (y > 0).astype(y.dtype)
    if name == "leaky_relu":
        return ((y > 0) * (1.0 - LEAKY_SLOPE) + LEAKY_SLOPE).astype(y.dtype)
    return None  # identity


def _make_activation_backward(name):
    @backward_of(name)
    def backward(out, g, graph):
        if graph:
            return (g * activation_derivative(out, name),)
        return (kernels(out).activation_backward(_c_array(out, g), out.value, name),)
    return backward


def _c_array(t, g):
    return g if g.flags.c_contiguous else t.backend.asarray(g, g.dtype)


_ACTIVATION_BACKWARD = {name: _make_activation_backward(name)
                        for name in ("tanh", "sigmoid", "relu", "leaky_relu")}


# ---- operators and methods ------------------------------------------------------------------

def _install():
    T = Tensor
    T.__add__ = lambda a, b: add(a, b)
    T.__radd__ = lambda a, b: add(b, a)
    T.__sub__ = lambda a, b: sub(a, b)
    T.__rsub__ = lambda a, b: sub(b, a)
    T.__mul__ = lambda a, b: mul(a, b)
    T.__rmul__ = lambda a, b: mul(b, a)
    T.__truediv__ = lambda a, b: div(a, b)
    T.__rtruediv__ = lambda a, b: div(b, a)
    T.__pow__ = lambda a, b: power(a, b)
    T.__rpow__ = lambda a, b: power(*pair(b, a, "pow"))
    T.__neg__ = neg
    T.__pos__ = lambda a: a
    for fn in (exp, log, sin, cos, sqrt, abs, tanh, sigmoid, relu, leaky_relu, astype):
        setattr(T, fn.__name__, fn)


_install()
