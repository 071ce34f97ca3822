"""The Tensor: an array ``value`` of a backend and the gradient ``grad`` of the same shape.

McAllester's arrays: every array is an object with ``.value`` and ``.grad``; an operation's
backward adds into the ``.grad`` of its inputs with loops of the same shape as its forward.

A Tensor made by an operation remembers the operation (``_op``, its backward function), its
inputs (``_parents``) and whatever the backward needs (``_saved``). The backward function of an
operation is called as ``_op(out, g, graph)``: ``out`` is the Tensor the operation made, ``g``
the gradient of the objective with respect to it, and it returns one gradient per parent
(None where a parent needs none). With ``graph=False`` ``g`` and the results are arrays of the
backend and the backward is plain array code (or a backend kernel); with ``graph=True`` (the
``create_graph`` of ``backward``/``grad``) ``g`` and the results are Tensors and the backward
is written with Tensor operations, so it is recorded and can be differentiated again.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from ..backends import get_backend
from .kernels import kernels_of

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class _GradMode(threading.local):
    """Whether operations record the graph, one flag per thread (on in every new thread).

    ``no_grad``/``enable_grad`` and a backward pass (which records only under create_graph)
    change the flag of the thread they run in; another thread keeps recording as before.
    ``saved`` holds the flags that the open ``no_grad``/``enable_grad`` blocks of the thread
    put back when they close."""

    def __init__(self):
        self.enabled = True
        self.saved = []


_mode = _GradMode()


class _SetGrad:
    """A context manager (and a decorator) that sets the grad mode of the current thread to
    ``enabled`` and puts the previous mode back at the end, even after an exception."""

    enabled = True

    def __enter__(self):
        mode = _mode
        mode.saved.append(mode.enabled)
        mode.enabled = self.enabled
        return self

    def __exit__(self, *exc):
        mode = _mode
        mode.enabled = mode.saved.pop()
        return False

    def __call__(self, fn):
        """``@bp.no_grad()`` above a function: each call runs inside the block."""
        @functools.wraps(fn)
        def inside(*args, **kwargs):
            with self:
                return fn(*args, **kwargs)
        return inside


class no_grad(_SetGrad):
    """``with bp.no_grad():`` (or ``@bp.no_grad()`` above a function): operations inside record
    nothing (inference, optimizer updates). It applies to the current thread only."""

    enabled = False


class enable_grad(_SetGrad):
    """``with bp.tensor.enable_grad():`` operations inside record again (inside a no_grad block).
    It applies to the current thread only."""

    enabled = True


def is_grad_enabled():
    """Whether operations of the current thread record the graph."""
    return _mode.enabled


def _backend_of_array(x):
    """The backend an array belongs to: numpy arrays -> "numpy", CuPy arrays -> "cuda"."""
    if isinstance(x, np.ndarray):
        return get_backend("numpy")
    if "cupy" in type(x).__module__:  # cupy (or the test suite's fake CuPy)
        return get_backend("cuda")
    return get_backend("numpy")


def _host_dtype(value, dtype):
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in _FLOATS:
            raise TypeError(f"Tensor: dtype must be float32 or float64; got {dtype}")
        return dtype
    dt = getattr(value, "dtype", None)
    if dt is not None and np.dtype(dt) in _FLOATS:
        return np.dtype(dt)
    return np.dtype(np.float64)


class Tensor:
    """``value`` (an array of ``backend``: numpy on "numpy" and "cpu", CuPy on "cuda") and
    ``grad`` (same shape, accumulated with += by ``backward``).

    ``Tensor(value, requires_grad=False, backend=None, dtype=None)``: ``backend`` defaults to
    the array's own ("numpy" for numpy arrays and Python numbers, "cuda" for CuPy arrays);
    ``dtype`` defaults to the array's float32/float64 (anything else becomes float64).

    The methods that are operations are defined beside them and set on this class by the
    modules above this one, so that an import only goes down: ``backward`` by autograd; the
    operators and ``exp``, ``tanh``, ``astype``, ... by ops_elementwise; ``sum``, ``mean``,
    ``broadcast_to`` by ops_reduce; ``T``, ``reshape``, ``transpose``, ``flatten``, indexing by
    ops_shape; ``@`` and ``matmul`` by ops_linalg; ``softmax``, ``log_softmax`` by ops_loss.
    Importing ``backprop.tensor`` (or any module of it) loads them all.
    """

    __slots__ = ("value", "_grad", "requires_grad", "backend", "_op", "_parents", "_saved",
                 "grad_tensor", "__weakref__")
    __array_priority__ = 1000  # numpy array (op) Tensor -> the Tensor's reflected operator
    __array_ufunc__ = None

    def __init__(self, value, requires_grad=False, backend=None, dtype=None):
        if isinstance(value, Tensor):
            backend = value.backend if backend is None else backend
            value = value.value
        backend = _backend_of_array(value) if backend is None else get_backend(backend)
        dtype = _host_dtype(value, dtype)
        self.value = to_backend(backend, value, dtype)
        self._grad = None
        self.requires_grad = bool(requires_grad)
        self.backend = backend
        self._op = None
        self._parents = ()
        self._saved = None
        self.grad_tensor = None

    # ---- attributes -------------------------------------------------------------------

    @property
    def shape(self):
        return tuple(self.value.shape)

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def ndim(self):
        return self.value.ndim

    @property
    def size(self):
        return self.value.size

    @property
    def is_leaf(self):
        return self._op is None

    @property
    def grad(self):
        """dObjective/dvalue, same shape as ``value`` (zeros before any backward)."""
        if self._grad is None and self.requires_grad:
            self._grad = self.backend.zeros(self.value.shape, self.value.dtype)
        return self._grad

    @grad.setter
    def grad(self, g):
        self._grad = g

    @property
    def has_grad(self):
        """Whether a gradient was written since the last ``zero_grad`` (PyTorch's ``grad is not
        None``): an optimizer skips a parameter without one."""
        return self._grad is not None

    @property
    def op_name(self):
        """The name of the operation that made this tensor (None for a leaf)."""
        return None if self._op is None else self._op.op_name

    # ---- the gradient ---------------------------------------------------------------------

    def zero_grad(self):
        """Forgets the accumulated gradient (``grad`` reads as zeros again)."""
        self._grad = None
        self.grad_tensor = None

    def detach(self):
        """The same value (shared memory) as a new leaf that records nothing."""
        return leaf(self.value, self.backend)

    def requires_grad_(self, flag=True):
        self.requires_grad = bool(flag)
        return self

    def numpy(self):
        """A numpy copy of the value (from the device on "cuda")."""
        return np.array(self.backend.to_numpy(self.value))

    def item(self):
        """The value of a one-entry tensor as a Python float."""
        if self.value.size != 1:
            _fail("item", ValueError, f"a tensor of shape {self.shape} is not one number")
        return float(self.backend.to_numpy(self.value).reshape(-1)[0])

    def __array__(self, dtype=None, copy=None):
        """``np.asarray(t)``: the value on the host (a copy from a device)."""
        a = np.asarray(self.backend.to_numpy(self.value))
        return a if dtype is None else a.astype(dtype)

    def __float__(self):
        return self.item()

    def __len__(self):
        return self.value.shape[0]

    def __repr__(self):
        extra = f", op={self.op_name!r}" if self._op is not None else (
            ", requires_grad=True" if self.requires_grad else "")
        return (f"Tensor(shape={self.shape}, dtype={self.dtype}, backend={self.backend.name!r}"
                f"{extra})")


# ---- making tensors inside operations (no checks: the caller knows) -----------------------------

def is_backend_array(backend, x):
    """True when ``x`` is an array of ``backend`` (its ``is_array``)."""
    if isinstance(x, np.ndarray):
        return backend.name in ("numpy", "cpu")
    try:
        return backend.is_array(x)
    except NotImplementedError:
        return False


def to_backend(backend, x, dtype):
    """``x`` as an array of ``backend`` and ``dtype``, keeping its shape (0-d included)."""
    value = backend.asarray(x, dtype)
    shape = np.shape(x)
    if tuple(value.shape) != tuple(shape):
        value = value.reshape(shape)
    return value


def leaf(value, backend, requires_grad=False):
    """A Tensor around an array of ``backend`` as is (no copy, no check)."""
    t = Tensor.__new__(Tensor)
    t.value = value
    t._grad = None
    t.requires_grad = requires_grad
    t.backend = backend
    t._op = None
    t._parents = ()
    t._saved = None
    t.grad_tensor = None
    return t


def result(value, backend, parents, op, saved=None):
    """The Tensor an operation makes; it records ``op`` only when a parent requires grad."""
    t = Tensor.__new__(Tensor)
    t.value = value
    t._grad = None
    t.backend = backend
    t.grad_tensor = None
    if _mode.enabled:
        for p in parents:
            if p.requires_grad:
                t.requires_grad = True
                t._op = op
                t._parents = parents
                t._saved = saved
                return t
    t.requires_grad = False
    t._op = None
    t._parents = ()
    t._saved = None
    return t


def backward_of(name, graph=True):
    """Marks a function as the backward of operation ``name`` (``graph``: it supports
    create_graph, i.e. it is written with Tensor operations when asked)."""
    def mark(fn):
        fn.op_name = name
        fn.graph_ok = graph
        return fn
    return mark


def _fail(op, exc, message):
    raise exc(f"{op}: {message}")


def as_tensor(x, like, op):
    """``x`` as a Tensor on ``like``'s backend and dtype: Tensors are checked (same backend, same
    dtype, or a clear error naming ``op``); arrays and numbers become constants."""
    if isinstance(x, Tensor):
        if x.backend is not like.backend:
            _fail(op, TypeError, f"tensors on different backends ({like.backend.name!r} and "
                                 f"{x.backend.name!r}); move one with bp.Tensor(t.numpy(), backend=...)")
        if x.value.dtype != like.value.dtype:
            _fail(op, TypeError, f"tensors of different dtypes ({like.value.dtype} and "
                                 f"{x.value.dtype}); convert one with t.astype(...)")
        return x
    if is_backend_array(like.backend, x) and x.dtype == like.value.dtype:
        return leaf(x, like.backend)
    try:
        value = to_backend(like.backend, x if is_backend_array(like.backend, x) else
                           np.asarray(x, dtype=like.value.dtype), like.value.dtype)
    except (TypeError, ValueError) as exc:
        _fail(op, TypeError, f"cannot use {type(x).__name__} as an operand ({exc})")
    return leaf(value, like.backend)


def pair(a, b, op):
    """Two operands as Tensors of one backend and dtype (one of them is a Tensor)."""
    if isinstance(a, Tensor):
        return a, as_tensor(b, a, op)
    return as_tensor(a, b, op), b


def check_tensor(x, op):
    if not isinstance(x, Tensor):
        _fail(op, TypeError, f"expected a Tensor; got {type(x).__name__}")
    return x


def kernels(t):
    return kernels_of(t.backend)
