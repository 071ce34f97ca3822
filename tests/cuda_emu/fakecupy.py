"""The part of CuPy the cuda backend uses, on the CPU: numpy buffers stand in for device memory
and ``RawModule`` compiles the program it is given with the host compiler and the emulation
header (``emulator.py``), so ``CudaBackend(cupy=fakecupy)`` runs the real kernels.

It is as strict as CuPy where the backend could go wrong unnoticed:
- an ``ndarray`` does not turn into a numpy array implicitly (``np.asarray(x)`` raises
  TypeError, as CuPy does), and mixing it with numpy arrays in arithmetic raises TypeError;
- kernel arguments are checked against the kernel's C signature (CuPy does not check them);
- every buffer has guard zones before and after it, checked after every launch, so a kernel
  that writes out of bounds fails the test;
- work launched while a stream captures a graph is recorded, not run, and runs when the graph
  is launched (with the arguments it had when it was captured), as with CUDA graphs.
"""

from __future__ import annotations

import ctypes
import numbers

import numpy as np
import numpy.lib.mixins

from . import emulator

_GUARD = 64  # bytes of guard zone on each side of a buffer
_GUARD_BYTE = 0xA5
float32, float64, int32, int64, uint32 = np.float32, np.float64, np.int32, np.int64, np.uint32


class _Buffer:
    """Device memory: a byte array with guard zones on both sides."""

    def __init__(self, nbytes):
        self.raw = np.full(nbytes + 2 * _GUARD + 16, _GUARD_BYTE, dtype=np.uint8)
        start = (-self.raw.ctypes.data) % 16  # 16-byte aligned, as cudaMalloc (256) is
        self.start = start + _GUARD
        self.nbytes = nbytes

    def view(self, shape, dtype):
        count = int(np.prod(shape, dtype=np.int64))
        mem = self.raw[self.start:self.start + count * np.dtype(dtype).itemsize]
        return mem.view(dtype).reshape(shape)

    def intact(self):
        before = self.raw[self.start - _GUARD:self.start]
        after = self.raw[self.start + self.nbytes:self.start + self.nbytes + _GUARD]
        return bool((before == _GUARD_BYTE).all() and (after == _GUARD_BYTE).all())


class _Pointer:
    def __init__(self, ptr):
        self.ptr = ptr


def _unwrap(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _reject_host(values, what):
    for v in values:
        if isinstance(v, np.ndarray) and v.ndim > 0:
            raise TypeError(f"Unsupported type {type(v)} in {what} (a numpy array mixed with a "
                            "device array; CuPy refuses implicit host-device transfers)")


class ndarray(numpy.lib.mixins.NDArrayOperatorsMixin):
    """A 'device' array: ``_a`` is a numpy view of a guarded buffer (``_buf``)."""

    __array_priority__ = 100

    def __init__(self, a, buf):
        self._a = a
        self._buf = buf

    @classmethod
    def _new(cls, shape, dtype):
        shape = (shape,) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        buf = _Buffer(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        return cls(buf.view(shape, dtype), buf)

    @classmethod
    def _from_host(cls, a):
        a = np.asarray(a)
        out = cls._new(a.shape, a.dtype)
        out._a[...] = a
        return out

    def _wrap(self, result):
        """Results of numpy on our buffers: views keep the buffer, new arrays get one."""
        if isinstance(result, np.ndarray):
            if result.base is not None and np.shares_memory(result, self._a):
                return ndarray(result, self._buf)
            return ndarray._from_host(result)
        if isinstance(result, tuple):
            return tuple(self._wrap(r) for r in result)
        if isinstance(result, np.generic):  # CuPy reductions give 0-d arrays
            return ndarray._from_host(np.asarray(result))
        return result

    # the attributes the backend and the frontend use
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    ndim = property(lambda self: self._a.ndim)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    flags = property(lambda self: self._a.flags)
    data = property(lambda self: _Pointer(self._a.ctypes.data))
    T = property(lambda self: self._wrap(self._a.T))

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _reject_host(inputs, ufunc.__name__)
        result = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        if "out" in kwargs:
            return kwargs["out"][0] if len(kwargs["out"]) == 1 else kwargs["out"]
        return self._wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        _reject_host(args, func.__name__)
        return self._wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    def __getitem__(self, key):
        return self._wrap(self._a[_unwrap(key)])

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray) and value.ndim > 0:
            _reject_host([value], "__setitem__")
        self._a[_unwrap(key)] = _unwrap(value)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __bool__(self):
        return bool(self._a)

    def __repr__(self):
        return f"fakecupy.{self._a!r}"

    def get(self):
        return self._a.copy()

    def set(self, arr, stream=None):
        """A host-to-device copy into this (contiguous) array, as CuPy's ``ndarray.set``."""
        arr = np.asarray(arr)
        if not self._a.flags.c_contiguous:
            raise RuntimeError("Cannot set to non-contiguous array")
        if arr.shape != self._a.shape or arr.dtype != self._a.dtype:
            raise ValueError(f"set: shape/dtype mismatch: {arr.shape} {arr.dtype} into "
                             f"{self._a.shape} {self._a.dtype}")
        if cuda._capturing is not None:
            raise RuntimeError("a host-to-device copy while a stream captures a graph")
        self._a[...] = arr

    def item(self):
        return self._a.item()

    def copy(self):
        return ndarray._from_host(self._a)

    def astype(self, dtype, copy=True):
        return ndarray._from_host(self._a.astype(dtype))

    def reshape(self, *shape):
        return self._wrap(self._a.reshape(*shape))

    def fill(self, value):
        self._a.fill(value)

    def __getattr__(self, name):  # sum, max, all, ... as CuPy's methods: results on the device
        if name.startswith("__"):  # no __array_interface__ and the like: no implicit host view
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            return lambda *a, **k: self._wrap(attr(*_unwrap(a), **_unwrap(k)))
        return self._wrap(attr)


# ---- array creation and transfer ----------------------------------------------------------------

def empty(shape, dtype=np.float64):
    return ndarray._new(shape, dtype)


def zeros(shape, dtype=np.float64):
    a = ndarray._new(shape, dtype)
    a._a[...] = 0
    return a


def full(shape, fill_value, dtype=np.float64):
    a = ndarray._new(shape, dtype)
    a._a[...] = fill_value
    return a


def asarray(a, dtype=None):
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    return ndarray._from_host(np.asarray(a, dtype=dtype))


def ascontiguousarray(a, dtype=None):
    if isinstance(a, ndarray):
        if a.flags.c_contiguous and (dtype is None or a.dtype == np.dtype(dtype)):
            return a
        return ndarray._from_host(np.ascontiguousarray(a._a, dtype=dtype))
    return ndarray._from_host(np.ascontiguousarray(a, dtype=dtype))


def asnumpy(a):
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


def get_array_module(*arrays):
    """cupy.get_array_module: this module when an argument is a device array, else numpy."""
    import sys
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in arrays) else np


# CuPy's functions that L-BFGS uses on its flat vectors: numpy's, which reach ndarray's
# __array_function__ / __array_ufunc__ and so give device arrays (and refuse host ones)
concatenate, dot, abs = np.concatenate, np.dot, np.abs


# ---- kernels --------------------------------------------------------------------------------------

class RawModule:
    """Compiles ``code`` (the text NVRTC would get) with the host compiler and the emulator."""

    compiled = 0  # programs compiled in this process (tests check the backend compiles once)

    def __init__(self, code=None, options=(), name_expressions=None, **kwargs):
        if name_expressions:
            raise NotImplementedError("fakecupy runs extern \"C\" kernels only")
        self.code = code
        self.options = tuple(options)
        self._lib = emulator.load(code)
        RawModule.compiled += 1

    def get_function(self, name):
        self._lib.kernel(name)  # raises for an unknown name, as CuPy does
        return RawKernel(self._lib, name)


class RawKernel:
    def __init__(self, lib, name):
        self._lib, self.name = lib, name

    def __call__(self, grid, block, args, shared_mem=0):
        if shared_mem:
            raise NotImplementedError("the kernels use static shared memory only")
        stream = cuda._capturing
        if stream is not None:
            stream._captured.append((self, grid, block, tuple(args)))
            return
        self._run(grid, block, args)

    def _run(self, grid, block, args):
        converted, buffers = [], []
        for a in args:
            if isinstance(a, ndarray):
                converted.append((a._a.ctypes.data, a.dtype))
                buffers.append(a)
            elif isinstance(a, np.generic):
                converted.append(a)
            elif isinstance(a, (bool, int, float)):
                raise TypeError(f"{self.name}: pass scalars as numpy scalars of the kernel's C "
                                f"type; got Python {type(a).__name__} {a!r}")
            else:
                converted.append(a)
        self._lib.launch(self.name, grid, block, converted)
        for i, a in enumerate(buffers):
            if not a._buf.intact():
                raise emulator.EmulationError(f"{self.name}: wrote outside the buffer of an array "
                                              f"argument (shape {a.shape})")


# ---- cupy.cuda ------------------------------------------------------------------------------------

class _Graph:
    def __init__(self, work):
        self._work = work

    def launch(self, stream=None):
        for work in self._work:
            if callable(work):  # a captured memset
                work()
            else:
                kernel, grid, block, args = work
                kernel._run(grid, block, args)


class _Stream:
    def __init__(self, non_blocking=False, null=False):
        self._captured = None
        self.non_blocking = non_blocking
        self.ptr = 0

    def synchronize(self):
        pass

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def begin_capture(self, mode=None):
        if cuda._capturing is not None:
            raise RuntimeError("a stream is already capturing")
        self._captured = []
        cuda._capturing = self

    def is_capturing(self):
        return cuda._capturing is self

    def end_capture(self):
        if cuda._capturing is not self:
            raise RuntimeError("this stream is not capturing")
        cuda._capturing = None
        graph, self._captured = _Graph(self._captured), None
        return graph


class _Device:
    def __init__(self, index=0):
        self.id = index
        # a small "GPU", so that every gemm tile configuration is used by modest sizes
        self.attributes = {"MultiProcessorCount": 4}

    def synchronize(self):
        pass


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1

    @staticmethod
    def memsetAsync(ptr, value, size, stream):
        """cudaMemsetAsync: run now, or recorded when a stream captures (replayed by the graph)."""
        def work():
            ctypes.memset(int(ptr), int(value), int(size))
        if cuda._capturing is not None:
            cuda._capturing._captured.append(work)
        else:
            work()


class _Cuda:
    Stream = _Stream
    Device = _Device
    runtime = _Runtime()
    _capturing = None

    def __init__(self):
        self._current = _Stream(null=True)

    def get_current_stream(self):
        return self._current


cuda = _Cuda()
__version__ = "0+fake"
