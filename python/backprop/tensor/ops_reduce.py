"""Reductions and their mirror image, broadcasting: sum, mean, sum_to, broadcast_to.

    sum over axes:   for i, k:  Y[i] += A[i, k]        backprop:  for i, k:  A.grad[i, k] += Y.grad[i]

The backward of a sum is a broadcast, and the backward of a broadcast is a sum, so under
create_graph each is written with the other. ``_sum_to`` is the backward of every broadcasting
operation (the elementwise ones, index_add): it folds a gradient back onto an operand's shape.
"""

from __future__ import annotations

import numpy as np

from .core import Tensor, backward_of, check_tensor, result


def _axes(axis, ndim, op):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of range for a tensor of {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def _as_array(x, like):
    """numpy reductions to a scalar give numpy scalars; a Tensor's value is always an array."""
    return np.asarray(x) if isinstance(x, np.generic) else x


def sum(A, axis=None, keepdims=False):  # noqa: A001
    """Y = Σ of A over ``axis`` (all axes by default).
    backprop: A.grad[i, k] += Y.grad[i] for every summed index k (a broadcast)."""
    A = check_tensor(A, "sum")
    axes = _axes(axis, A.value.ndim, "sum")
    value = _as_array(A.value.sum(axis=axes, keepdims=keepdims), A.value)
    return result(value, A.backend, (A,), _sum_backward, (axes, keepdims))


@backward_of("sum")
def _sum_backward(out, g, graph):
    axes, keepdims = out._saved
    shape = out._parents[0].value.shape
    if not keepdims:
        kept = tuple(1 if i in axes else s for i, s in enumerate(shape))
        g = g.reshape(kept)
    return (broadcast_to(g, shape) if graph else np.broadcast_to(g, shape),)


def mean(A, axis=None, keepdims=False):
    """Y = (1/N) Σ of A over ``axis``, N the number of terms.
    backprop: A.grad[i, k] += Y.grad[i] / N."""
    A = check_tensor(A, "mean")
    axes = _axes(axis, A.value.ndim, "mean")
    count = 1
    for a in axes:
        count *= A.value.shape[a]
    return sum(A, axes, keepdims) * (1.0 / count) if count else sum(A, axes, keepdims)


def broadcast_to(A, shape):
    """Y = A broadcast to ``shape`` (numpy's rules).
    backprop: A.grad[i_A] += Σ Y.grad[i] over the outputs i that repeat A[i_A] (a sum_to)."""
    A = check_tensor(A, "broadcast_to")
    shape = tuple(shape)
    if A.value.shape == shape:
        return A
    try:
        value = np.broadcast_to(A.value, shape)
    except ValueError as exc:
        raise ValueError(f"broadcast_to: shape {A.shape} cannot broadcast to {shape}: {exc}") from None
    return result(value, A.backend, (A,), _broadcast_backward)


@backward_of("broadcast_to")
def _broadcast_backward(out, g, graph):
    return (_sum_to(g, out._parents[0].value.shape, graph),)


def sum_to(A, shape):
    """Y = A summed over the axes that broadcasting would add or stretch to reach A from ``shape``
    (``shape`` must be one that broadcasts to A's shape: (4,), (1, 4) or (3, 1) for a (3, 4) A).
    backprop: A.grad[i] += Y.grad[i folded onto shape] (a broadcast)."""
    A = check_tensor(A, "sum_to")
    shape = tuple(int(s) for s in shape)
    if A.value.shape == shape:
        return A
    if not _broadcasts_to(shape, A.value.shape):
        raise ValueError(f"sum_to: shape {shape} does not broadcast to the tensor's shape "
                         f"{A.shape}, so the tensor is not a broadcast of it (each axis of the "
                         "target must match the tensor's trailing axes or be 1)")
    return result(_sum_to_array(A.value, shape), A.backend, (A,), _sum_to_backward)


def _broadcasts_to(shape, target):
    """Whether numpy broadcasting takes an array of ``shape`` to ``target``."""
    lead = len(target) - len(shape)
    if lead < 0:
        return False
    return all(s == t or s == 1 for s, t in zip(shape, target[lead:]))


def _sum_to(g, shape, graph):
    """The gradient ``g`` of a broadcast result folded onto the operand's ``shape``: a Tensor
    sum_to under create_graph, an array sum otherwise."""
    return sum_to(g, shape) if graph else _sum_to_array(g, shape)


def _sum_to_array(g, shape):
    """Σ of g over the axes that broadcasting added or stretched, as an array of ``shape``
    (no check: ``shape`` broadcasts to g's shape)."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                      if s == 1 and g.shape[lead + i] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape)


@backward_of("sum_to")
def _sum_to_backward(out, g, graph):
    shape = out._parents[0].value.shape
    return (broadcast_to(g, shape) if graph else np.broadcast_to(g, shape),)


def _install():
    Tensor.sum = sum
    Tensor.mean = mean
    Tensor.broadcast_to = broadcast_to


_install()
