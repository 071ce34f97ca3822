"""Operations that move entries without arithmetic: reshape, transpose, indexing, concatenate, stack.

Each backward moves the gradients back to where the entries came from:

    Y[j] = A[index(j)]            backprop:  A.grad[index(j)] += Y.grad[j]

(for an integer-array index that repeats an entry, the repeats' gradients add up: a scatter-add).
"""

from __future__ import annotations

import numpy as np

from .core import Tensor, as_tensor, backward_of, check_tensor, leaf, result
from .ops_reduce import _sum_to


def reshape(A, *shape):
    """Y = A with another shape (same entries in C order).   backprop: A.grad += Y.grad reshaped back."""
    A = check_tensor(A, "reshape")
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    try:
        value = A.value.reshape(shape)
    except ValueError as exc:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {A.shape} to {shape}: {exc}") from None
    return result(value, A.backend, (A,), _reshape_backward)


@backward_of("reshape")
def _reshape_backward(out, g, graph):
    return (g.reshape(out._parents[0].value.shape),)


def transpose(A, *axes):
    """Y[i_perm] = A[i] (all axes reversed by default).   backprop: A.grad += Y.grad with the inverse permutation."""
    A = check_tensor(A, "transpose")
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    axes = tuple(range(A.value.ndim))[::-1] if not axes else tuple(int(a) % max(A.value.ndim, 1) for a in axes)
    if sorted(axes) != list(range(A.value.ndim)):
        raise ValueError(f"transpose: axes {axes} are not a permutation of a tensor of shape {A.shape}")
    return result(A.value.transpose(axes), A.backend, (A,), _transpose_backward, axes)


@backward_of("transpose")
def _transpose_backward(out, g, graph):
    inverse = tuple(np.argsort(out._saved))
    return (transpose(g, inverse) if graph else g.transpose(inverse),)


def _index(key, backend):
    """The index with Tensors replaced by their values and integer arrays on the backend."""
    if isinstance(key, tuple):
        return tuple(_index(k, backend) for k in key)
    if isinstance(key, Tensor):
        key = key.value
    if isinstance(key, list):
        key = np.asarray(key)
    if isinstance(key, np.ndarray) and key.dtype.kind in "iub" and backend.name == "cuda":
        cp = getattr(backend, "cp", None)
        if cp is not None:
            key = cp.asarray(key)
    return key


def getitem(A, key):
    """Y = A[key]: basic slicing and integer-array (or boolean) indexing, as numpy.
    backprop: A.grad[key] += Y.grad (repeated entries add: a scatter-add)."""
    A = check_tensor(A, "getitem")
    key = _index(key, A.backend)
    try:
        value = A.value[key]
    except (IndexError, TypeError, ValueError) as exc:
        raise IndexError(f"getitem: cannot index a tensor of shape {A.shape} with {key!r}: {exc}") from None
    if isinstance(value, np.generic):
        value = np.asarray(value)
    return result(value, A.backend, (A,), _getitem_backward, key)


@backward_of("getitem")
def _getitem_backward(out, g, graph):
    A = out._parents[0]
    if graph:
        return (index_add(zeros_like(A), out._saved, g),)
    G = A.backend.zeros(A.value.shape, A.value.dtype)
    _scatter_add(G, out._saved, g)
    return (G,)


def _is_basic(key):
    """Whether ``key`` is basic indexing (integers, slices, ..., None): no entry repeats."""
    def basic(k):
        if k is None or k is Ellipsis or isinstance(k, slice):
            return True
        return isinstance(k, (int, np.integer)) and not isinstance(k, bool)  # True is a mask

    return all(basic(k) for k in (key if isinstance(key, tuple) else (key,)))


def _scatter_add(target, key, values):
    """target[key] += values, with repeated indices adding up (numpy's add.at; cupyx's scatter_add).
    A basic index selects each entry once: a plain in-place add, without add.at's slow path."""
    if _is_basic(key):
        target[key] += values
        return
    if isinstance(target, np.ndarray):
        np.add.at(target, key, values)
        return
    try:
        import cupyx
        cupyx.scatter_add(target, key, values)
    except ImportError:
        np.add.at(target, key, values)


def zeros_like(A):
    """A constant Tensor of zeros shaped like A."""
    return leaf(A.backend.zeros(A.value.shape, A.value.dtype), A.backend)


def index_add(A, key, B):
    """Y = A, then Y[key] += B (repeated entries add).
    backprop: A.grad += Y.grad;  B.grad += Y.grad[key] (a gather)."""
    A = check_tensor(A, "index_add")
    B = check_tensor(B, "index_add")
    key = _index(key, A.backend)
    value = A.value.copy()
    _scatter_add(value, key, B.value)
    return result(value, A.backend, (A, B), _index_add_backward, key)


@backward_of("index_add")
def _index_add_backward(out, g, graph):
    A, B = out._parents
    key = out._saved
    gb = None
    if B.requires_grad:
        gb = getitem(g, key) if graph else g[key]
        if not graph and isinstance(gb, np.generic):
            gb = np.asarray(gb)
        if tuple(gb.shape) != tuple(B.value.shape):  # B was broadcast into A[key]
            gb = _sum_to(gb, B.value.shape, graph)
    return (g if A.requires_grad else None, gb)


def concatenate(tensors, axis=0):
    """Y = the tensors joined along ``axis``.   backprop: each T.grad += its slice of Y.grad."""
    tensors = _same_kind(tensors, "concatenate")
    ndim = tensors[0].value.ndim
    if not -ndim <= axis < ndim:
        raise ValueError(f"concatenate: axis {axis} out of range for tensors of {ndim} dimensions")
    axis %= ndim
    try:
        value = np.concatenate([t.value for t in tensors], axis=axis)
    except ValueError as exc:
        raise ValueError(f"concatenate: shapes {[t.shape for t in tensors]}: {exc}") from None
    sizes = [t.value.shape[axis] for t in tensors]
    return result(value, tensors[0].backend, tuple(tensors), _concatenate_backward, (axis, sizes))


@backward_of("concatenate")
def _concatenate_backward(out, g, graph):
    axis, sizes = out._saved
    grads, start = [], 0
    for t, n in zip(out._parents, sizes):
        key = (slice(None),) * axis + (slice(start, start + n),)
        grads.append((getitem(g, key) if graph else g[key]) if t.requires_grad else None)
        start += n
    return tuple(grads)


def stack(tensors, axis=0):
    """Y = the tensors stacked along a new ``axis``.   backprop: each T.grad += Y.grad[..., k, ...]."""
    tensors = _same_kind(tensors, "stack")
    ndim = tensors[0].value.ndim + 1
    if not -ndim <= axis < ndim:
        raise ValueError(f"stack: axis {axis} out of range for a result of {ndim} dimensions")
    axis %= ndim
    try:
        value = np.stack([t.value for t in tensors], axis=axis)
    except ValueError as exc:
        raise ValueError(f"stack: shapes {[t.shape for t in tensors]}: {exc}") from None
    return result(value, tensors[0].backend, tuple(tensors), _stack_backward, axis)


@backward_of("stack")
def _stack_backward(out, g, graph):
    axis = out._saved
    grads = []
    for k, t in enumerate(out._parents):
        key = (slice(None),) * axis + (k,)
        grads.append((getitem(g, key) if graph else g[key]) if t.requires_grad else None)
    return tuple(grads)


def _same_kind(tensors, op):
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op}: needs at least one tensor")
    first = check_tensor(tensors[0], op)
    return [first] + [as_tensor(t, first, op) for t in tensors[1:]]


def _install():
    Tensor.T = property(transpose, doc="Y = A with all axes reversed (transpose(A)).")
    Tensor.reshape = reshape
    Tensor.transpose = transpose
    Tensor.__getitem__ = getitem
    Tensor.flatten = lambda A: reshape(A, (-1,))


_install()
