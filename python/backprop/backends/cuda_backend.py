"""The cuda backend: the kernels of cuda/*.cu, compiled at run time by CuPy RawModule (NVRTC).

Arrays of this backend are CuPy arrays in device memory; weights, optimizer state and activation
buffers stay there between steps. Every kernel of the Backend protocol is one or two launches of
the project's own kernels (no cuBLAS):

    gemm, dense_forward     one tiled product, bias + activation fused into its epilogue
    dense_backward          dW = A_prevᵀ G with db = 1ᵀ G fused into it, then
                            G_prev = act'(A_prev) ⊙ (G Wᵀ) with the Hadamard in the epilogue
    loss, weight_penalty    one launch each: gradient, block sums, last-block total
    the rest                one elementwise launch each

The sources are pasted together (common.cuh first) and compiled once per process into one
RawModule. The kernels are ``extern "C"`` entry points with plain names (gemm_L_nn_f32, ...),
not templates named through ``name_expressions``: CuPy's on-disk cache (~/.cupy/kernel_cache,
keyed by the source text, the options, the GPU architecture and the NVRTC version) is then
reused by later processes, which it is not for modules built with ``name_expressions`` in the
CuPy releases checked (cupy/cupy#9667, #10173).

Scalars go to the kernels as numpy scalars of the exact C type (np.int32 for int, np.int64 for
long long, np.float32/np.float64 for T and double), because CuPy passes a scalar by its own type
without looking at the kernel's signature. Grid and block sizes are computed next to each launch.
``launches`` counts what the host submits: kernel launches, graph launches (one each, however
many kernels the graph holds) and the fused trainer's host<->device copies of its control block;
the benchmark reports it per training step.

Beyond the protocol, ``make_trainer`` builds the fused whole-step path (GraphTrainer): each
training step (forward, loss, backward, penalty, update) is captured once as a CUDA graph and
replayed with one launch; ``Trainer``, ``fit`` and ``backprop bench`` use it on this backend.

CuPy is imported when the backend is made, not when this module is imported; a CuPy-compatible
module can be passed as ``CudaBackend(cupy=...)`` (the tests run the whole backend on the CPU
that way, with the kernels compiled by the host compiler).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .base import ACTIVATIONS, LOSSES, Backend, BackendUnavailable

# activation and loss codes, the same numbers as BP_ACT_* and BP_LOSS_* in cuda/common.cuh
_ACT = {"identity": 0, "tanh": 1, "sigmoid": 2, "relu": 3, "leaky_relu": 4}
_LOSS = {"sse": 0, "mse": 1, "bce": 2}
assert set(_ACT) == set(ACTIVATIONS)

# gemm configurations: name -> (BM, BN); every one runs 256 threads per block
GEMM_CONFIGS = {"L": (128, 128), "M": (64, 64), "S": (32, 32)}
THREADS = 256            # BP_THREADS, the block of the 1-D kernels
MAX_PARTIALS = 1024      # blocks of the kernels that end in a grid-wide sum (size of _partials)
MAX_GRID_1D = 65535 * 4  # blocks of a grid-stride elementwise launch
INT32_MAX = 2**31 - 1
GRID_Y_MAX = 65535
_NULL = np.uint64(0)     # a null pointer argument

_INSTALL = ("pip install '.[cuda12]' (CUDA 12 driver) or '.[cuda13]' (CUDA 13 driver) on a "
            "machine with an NVIDIA GPU")


class CudaKernelError(RuntimeError):
    """A CUDA kernel failed to launch or run; the message names the kernel."""


def _import_cupy():
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailable(f"backend 'cuda' needs CuPy, which is not installed ({exc}): "
                                 f"{_INSTALL}") from exc
    return cupy


def sources_dir() -> Path:
    """The folder holding cuda/*.cu: ``backprop/cuda`` in an installed package, ``cuda/`` at
    the root of a source tree, or $BACKPROP_CUDA_SOURCES."""
    here = Path(__file__).resolve().parent
    candidates = [os.environ.get("BACKPROP_CUDA_SOURCES"), here.parent / "cuda",
                  here.parent.parent.parent / "cuda"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "common.cuh").is_file():
            return Path(candidate)
    raise BackendUnavailable("backend 'cuda' cannot find its kernel sources (cuda/*.cu): looked in "
                             + ", ".join(str(c) for c in candidates if c))


def module_source(folder=None) -> str:
    """The one NVRTC program: common.cuh, then every .cu in name order, their includes of
    common.cuh removed (NVRTC gets no include path, and the disk cache keys on this text)."""
    folder = Path(folder) if folder is not None else sources_dir()
    parts = []
    for path in [folder / "common.cuh"] + sorted(folder.glob("*.cu")):
        lines = [line for line in path.read_text().splitlines()
                 if line.strip() not in ('#include "common.cuh"', "#pragma once")]
        parts.append(f"// ---- {path.name}\n" + "\n".join(lines))
    return "\n".join(parts) + "\n"


NVRTC_OPTIONS = ("--std=c++17",)


def _blocks(n, per_block):
    return (int(n) + per_block - 1) // per_block


class CudaBackend(Backend):
    name = "cuda"

    def __init__(self, cupy=None):
        cp = _import_cupy() if cupy is None else cupy
        try:
            count = cp.cuda.runtime.getDeviceCount()
        except Exception as exc:  # no driver, or a driver older than the CuPy build
            raise BackendUnavailable(f"backend 'cuda': CuPy is installed but no CUDA GPU can be "
                                     f"used ({type(exc).__name__}: {exc})") from exc
        if count < 1:
            raise BackendUnavailable("backend 'cuda': CuPy is installed but no CUDA GPU is visible")
        self.cp = cp
        self.launches = 0
        self.sync_each_launch = os.environ.get("BACKPROP_CUDA_SYNC", "") == "1"
        self._module = None
        self._functions = {}
        self._sms = int(cp.cuda.Device().attributes.get("MultiProcessorCount", 1))
        self._partials = None   # MAX_PARTIALS doubles: block sums of the reducing kernels
        self._counter = None    # one unsigned int: blocks done, rearmed by the last block
        self._capturing = False  # a stream is capturing a graph: no allocations, no syncs
        self.graph_launches = 0  # replays of captured graphs (each also counts in launches)
        self.copies = 0          # host<->device copies of the graph trainer (also in launches)

    # ---- compilation and launches -------------------------------------------------------

    def _function(self, name):
        fn = self._functions.get(name)
        if fn is None:
            if self._module is None:
                try:
                    self._module = self.cp.RawModule(code=module_source(), options=NVRTC_OPTIONS)
                except Exception as exc:
                    raise CudaKernelError(f"compiling the cuda kernels failed: {exc}") from exc
            try:
                fn = self._functions[name] = self._module.get_function(name)
            except Exception as exc:
                raise CudaKernelError(f"cuda kernel {name!r} cannot be loaded: {exc}") from exc
        return fn

    def _launch(self, name, grid, block, args):
        """Launches kernel ``name``; a CUDA error becomes CudaKernelError naming the kernel
        (with BACKPROP_CUDA_SYNC=1 each launch is also waited for, so errors of the run itself
        are attributed to the right kernel)."""
        fn = self._function(name)
        try:
            fn(grid, block, args)
            if self.sync_each_launch and not self._capturing:
                self.synchronize()
        except Exception as exc:
            raise CudaKernelError(f"cuda kernel {name!r} (grid {grid}, block {block}) failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
        self.launches += 1

    def _value(self, kernel, value):
        """The 0-d float64 device array a reduction writes its result into: ``value`` when the
        caller gave one (a captured graph writes the same array at every replay), else a new one
        (refused while a graph is captured: it cannot allocate)."""
        if value is not None:
            if not isinstance(value, self.cp.ndarray) or value.dtype != np.float64 or value.shape != ():
                raise TypeError(f"cuda {kernel}: value must be a 0-d float64 array of the backend")
            return value
        if self._capturing:
            raise RuntimeError(f"cuda {kernel} inside a captured graph needs value= (a 0-d float64 "
                               "array the graph writes at every replay)")
        return self.cp.empty((), np.float64)

    def _upload(self, dst, host):
        """dst (a contiguous device array) = host: one host-to-device copy, counted in launches."""
        dst.set(np.ascontiguousarray(host, dtype=dst.dtype))
        self.copies += 1
        self.launches += 1

    def _download(self, src):
        """A host copy of src: one device-to-host copy (it waits for the work before it)."""
        out = src.get()
        self.copies += 1
        self.launches += 1
        return out

    def _workspace(self):
        if self._partials is None:
            self._partials = self.cp.zeros((MAX_PARTIALS,), np.float64)
            self._counter = self.cp.zeros((1,), np.uint32)
        return self._partials, self._counter

    # ---- checks (before any launch) -----------------------------------------------------

    def _check(self, kernel, **arrays):
        """Every array is a C-contiguous CuPy array of one floating dtype; returns that dtype."""
        dtype = None
        for label, x in arrays.items():
            if not isinstance(x, self.cp.ndarray):
                raise TypeError(f"cuda {kernel}: {label} must be an array of the cuda backend "
                                f"(backend.asarray); got {type(x).__name__}")
            if x.dtype not in (np.float32, np.float64):
                raise TypeError(f"cuda {kernel}: {label} must be float32 or float64; got {x.dtype}")
            if not x.flags.c_contiguous:
                raise ValueError(f"cuda {kernel}: {label} must be C-contiguous")
            if dtype is None:
                dtype = x.dtype
            elif x.dtype != dtype:
                raise TypeError(f"cuda {kernel}: {label} is {x.dtype} but the other arrays are {dtype}")
        return np.dtype(dtype)

    @staticmethod
    def _check_shape(kernel, label, x, shape):
        if tuple(x.shape) != tuple(shape):
            raise ValueError(f"cuda {kernel}: {label} must have shape {tuple(shape)}; "
                             f"got {tuple(x.shape)}")

    @staticmethod
    def _check_int32(kernel, **dims):
        for label, d in dims.items():
            if d > INT32_MAX:
                raise ValueError(f"cuda {kernel}: {label} = {d} exceeds the 32-bit index range "
                                 f"of the kernel ({INT32_MAX})")

    @staticmethod
    def _check_disjoint(kernel, out, *inputs):
        """``out`` must not overlap an input the kernel reads while it writes ``out``."""
        lo = out.data.ptr
        hi = lo + out.nbytes
        for x in inputs:
            if x is None or x.nbytes == 0:
                continue
            a = x.data.ptr
            if a < hi and lo < a + x.nbytes:
                raise ValueError(f"cuda {kernel}: the output buffer overlaps an input")

    def _out(self, kernel, out, shape, dtype, label="out"):
        if out is None:
            return self.cp.empty(shape, dtype)
        self._check(kernel, **{label: out})
        if out.dtype != dtype:
            raise TypeError(f"cuda {kernel}: {label} is {out.dtype}, the inputs are {dtype}")
        self._check_shape(kernel, label, out, shape)
        return out

    @staticmethod
    def _activation(kernel, name):
        if name not in _ACT:
            raise ValueError(f"unknown activation {name!r}; valid activations: {', '.join(ACTIVATIONS)}")
        return _ACT[name]

    @staticmethod
    def _suffix(dtype):
        return "f32" if dtype == np.float32 else "f64"

    # ---- memory ---------------------------------------------------------------------------

    def asarray(self, x, dtype):
        cp = self.cp
        if isinstance(x, cp.ndarray):
            return cp.ascontiguousarray(x, dtype=dtype)
        return cp.asarray(np.ascontiguousarray(x, dtype=dtype))

    def to_numpy(self, x):
        if isinstance(x, self.cp.ndarray):
            return self.cp.asnumpy(x)
        return np.asarray(x)

    def zeros(self, shape, dtype):
        return self.cp.zeros(shape, dtype)

    def empty(self, shape, dtype):
        return self.cp.empty(shape, dtype)

    def synchronize(self):
        self.cp.cuda.get_current_stream().synchronize()

    def is_device_array(self, x):
        """True for an array of this backend (a CuPy array): predict then stays on the GPU."""
        return isinstance(x, self.cp.ndarray)

    # ---- the matrix product -----------------------------------------------------------------

    def gemm_config(self, m, n):
        """The tile configuration for an m x n product: the largest tiles that still give every
        multiprocessor a block (L for the big products, S for the launch-bound small ones)."""
        for cfg in ("L", "M"):
            bm, bn = GEMM_CONFIGS[cfg]
            if _blocks(m, bm) * _blocks(n, bn) >= self._sms:
                return cfg
        return "S"

    def _gemm(self, A, B, C, m, n, k, trans_a, trans_b, alpha, beta, dtype, bias=None,
              act=0, D=None, dact=0, colsum=None, config=None):
        """One launch of gemm_<cfg>_<ops>_<dtype>: C = epi(alpha op(A) op(B) + beta C)."""
        self._check_int32("gemm", m=m, n=n, k=k)
        if m == 0 or n == 0:
            if colsum is not None and n:
                colsum[...] = 0
            return C
        cfg = config or self.gemm_config(m, n)
        bm, bn = GEMM_CONFIGS[cfg]
        grid = (_blocks(m, bm), _blocks(n, bn), 1)  # rows of tiles along x, columns along y
        if grid[1] > GRID_Y_MAX:
            raise ValueError(f"cuda gemm: {n} columns need {grid[1]} column tiles, more than "
                             f"the grid allows ({GRID_Y_MAX})")
        ops = ("t" if trans_a else "n") + ("t" if trans_b else "n")
        T = dtype.type
        self._launch(f"gemm_{cfg}_{ops}_{self._suffix(dtype)}", grid, (THREADS, 1, 1),
                     (A, B, C, np.int32(m), np.int32(n), np.int32(k), T(alpha), T(beta),
                      _NULL if bias is None else bias, np.int32(act),
                      _NULL if D is None else D, np.int32(dact),
                      _NULL if colsum is None else colsum))
        return C

    def gemm(self, A, B, out=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, config=None):
        dtype = self._check("gemm", A=A, B=B)
        if A.ndim != 2 or B.ndim != 2:
            raise ValueError(f"cuda gemm: A and B must be 2-D; got {A.ndim}-D and {B.ndim}-D")
        m, k = A.shape[::-1] if trans_a else A.shape
        k2, n = B.shape[::-1] if trans_b else B.shape
        if k != k2:
            raise ValueError(f"cuda gemm: op(A) is {m}x{k} but op(B) is {k2}x{n}")
        if beta != 0.0 and out is None:
            raise ValueError("cuda gemm: beta != 0 needs out (it holds C)")
        C = self._out("gemm", out, (m, n), dtype)
        self._check_disjoint("gemm", C, A, B)
        return self._gemm(A, B, C, m, n, k, trans_a, trans_b, alpha, beta, dtype, config=config)

    # ---- one dense layer --------------------------------------------------------------------

    # A_next = act(A W + b): one launch, bias and activation in the product's epilogue
    def dense_forward(self, A, W, b, activation, out=None, config=None):
        dtype = self._check("dense_forward", A=A, W=W, b=b)
        act = self._activation("dense_forward", activation)
        if A.ndim != 2 or W.ndim != 2 or A.shape[1] != W.shape[0]:
            raise ValueError(f"cuda dense_forward: A {tuple(A.shape)} and W {tuple(W.shape)} "
                             "do not chain (A: n x p_in, W: p_in x p_out)")
        n, p_in = A.shape
        p_out = W.shape[1]
        self._check_shape("dense_forward", "b", b, (p_out,))
        out = self._out("dense_forward", out, (n, p_out), dtype)
        self._check_disjoint("dense_forward", out, A, W, b)
        return self._gemm(A, W, out, n, p_out, p_in, False, False, 1.0, 0.0, dtype, bias=b,
                          act=act, config=config)

    # dW = A_prevᵀ G and db = 1ᵀ G in one launch (db summed from the G tiles the product loads),
    # G_prev = act'(A_prev) ⊙ (G Wᵀ) in a second (the Hadamard in the product's epilogue)
    def dense_backward(self, G, A_prev, W, activation_prev, dW=None, db=None, G_prev=None,
                       need_G_prev=True, config=None):
        dtype = self._check("dense_backward", G=G, A_prev=A_prev, W=W)
        dact = 0 if activation_prev is None else self._activation("dense_backward", activation_prev)
        if G.ndim != 2 or A_prev.ndim != 2 or W.ndim != 2:
            raise ValueError("cuda dense_backward: G, A_prev and W must be 2-D")
        n, p_out = G.shape
        p_in = A_prev.shape[1]
        self._check_shape("dense_backward", "A_prev", A_prev, (n, p_in))
        self._check_shape("dense_backward", "W", W, (p_in, p_out))
        dW = self._out("dense_backward", dW, (p_in, p_out), dtype, "dW")
        db = self._out("dense_backward", db, (p_out,), dtype, "db")
        self._check_disjoint("dense_backward", dW, G, A_prev, W)
        self._check_disjoint("dense_backward", db, G, A_prev, W, dW)
        self._gemm(A_prev, G, dW, p_in, p_out, n, True, False, 1.0, 0.0, dtype, colsum=db,
                   config=config)
        if not need_G_prev:
            return dW, db, None
        G_prev = self._out("dense_backward", G_prev, (n, p_in), dtype, "G_prev")
        self._check_disjoint("dense_backward", G_prev, G, A_prev, W, dW, db)
        self._gemm(G, W, G_prev, n, p_in, p_out, False, True, 1.0, 0.0, dtype,
                   D=None if activation_prev is None else A_prev, dact=dact, config=config)
        return dW, db, G_prev

    # ---- elementwise and reductions -----------------------------------------------------------

    def _grid_1d(self, size):
        return (max(1, min(_blocks(size, THREADS), MAX_GRID_1D)), 1, 1)

    def _same_shape(self, kernel, out, like, dtype):
        return self._out(kernel, out, like.shape, dtype)

    # A = act(H)
    def activation_forward(self, H, activation, out=None):
        dtype = self._check("activation_forward", H=H)
        act = self._activation("activation_forward", activation)
        out = self._same_shape("activation_forward", out, H, dtype)
        if H.size:
            self._launch(f"activation_forward_{self._suffix(dtype)}", self._grid_1d(H.size),
                         (THREADS, 1, 1), (H, out, np.int64(H.size), np.int32(act)))
        return out

    # G = dA ⊙ act'(A)   (out may be dA: elementwise, in place)
    def activation_backward(self, dA, A, activation, out=None):
        dtype = self._check("activation_backward", dA=dA, A=A)
        act = self._activation("activation_backward", activation)
        self._check_shape("activation_backward", "A", A, dA.shape)
        out = self._same_shape("activation_backward", out, dA, dtype)
        if dA.size:
            self._launch(f"activation_backward_{self._suffix(dtype)}", self._grid_1d(dA.size),
                         (THREADS, 1, 1), (dA, A, out, np.int64(dA.size), np.int32(act)))
        return out

    # db = 1ᵀ G: a column sum by a tree reduction per block; rows split over blocks (and a
    # second launch adding the partial sums) when there are too few columns to fill the GPU
    def colsum(self, G, out=None):
        dtype = self._check("colsum", G=G)
        if G.ndim != 2:
            raise ValueError(f"cuda colsum: G must be 2-D; got shape {tuple(G.shape)}")
        n, p = G.shape
        self._check_int32("colsum", n=n, p=p)
        out = self._out("colsum", out, (p,), dtype)
        self._check_disjoint("colsum", out, G)
        if p == 0:
            return out
        if n == 0:
            out[...] = 0
            return out
        name = f"colsum_{self._suffix(dtype)}"
        col_blocks = _blocks(p, 32)
        splits = min(_blocks(n, 256), max(1, (2 * self._sms) // col_blocks), 1024)
        if splits <= 1:
            self._launch(name, (col_blocks, 1, 1), (32, 8, 1), (G, out, np.int32(n), np.int32(p)))
            return out
        partial = self.cp.empty((splits, p), dtype)
        self._launch(name, (col_blocks, splits, 1), (32, 8, 1), (G, partial, np.int32(n), np.int32(p)))
        self._launch(name, (col_blocks, 1, 1), (32, 8, 1), (partial, out, np.int32(splits), np.int32(p)))
        return out

    # A ⊙ M
    def dropout(self, A, M, out=None):
        dtype = self._check("dropout", A=A, M=M)
        self._check_shape("dropout", "M", M, A.shape)
        out = self._same_shape("dropout", out, A, dtype)
        if A.size:
            self._launch(f"dropout_{self._suffix(dtype)}", self._grid_1d(A.size), (THREADS, 1, 1),
                         (A, M, out, np.int64(A.size)))
        return out

    # ---- losses ---------------------------------------------------------------------------------

    def loss(self, name, F, Y, G=None, value=None):
        """(value, G); value is a 0-d float64 CuPy array (``float(value)`` waits for it), so a
        training step needs no host round trip until the caller reads it; ``value``: the array
        to write it into."""
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
        dtype = self._check("loss", F=F, Y=Y)
        if F.ndim != 2:
            raise ValueError(f"cuda loss: F must be 2-D (n x k); got shape {tuple(F.shape)}")
        self._check_shape("loss", "Y", Y, F.shape)
        G = self._out("loss", G, F.shape, dtype, "G")
        self._check_disjoint("loss", G, F, Y)
        n, k = F.shape
        if F.size == 0:
            return self.cp.zeros((), np.float64), G
        value = self._value("loss", value)  # written by the kernel's last block
        partials, counter = self._workspace()
        T = dtype.type
        sfx = self._suffix(dtype)
        if name == "cross_entropy":
            self._check_int32("loss", n=n, k=k)
            grid = (min(_blocks(n, 8), MAX_PARTIALS), 1, 1)
            self._launch(f"softmax_cross_entropy_{sfx}", grid, (32, 8, 1),
                         (F, Y, G, np.int32(n), np.int32(k), partials, counter, value))
            return value, G
        size = F.size
        gscale, vscale = {"sse": (1.0, 0.5), "mse": (2.0 / size, 1.0 / size),
                          "bce": (1.0 / size, 1.0 / size)}[name]
        grid = (min(_blocks(size, THREADS), MAX_PARTIALS), 1, 1)
        self._launch(f"loss_pointwise_{sfx}", grid, (THREADS, 1, 1),
                     (np.int32(_LOSS[name]), F, Y, G, np.int64(size), T(gscale),
                      np.float64(vscale), partials, counter, value))
        return value, G

    # penalty = l1 Σ|W| + (l2/2) Σ W²,  dW += l1 sign(W) + l2 W; the value as a 0-d array
    def weight_penalty(self, W, dW, l1, l2, value=None):
        dtype = self._check("weight_penalty", W=W, dW=dW)
        self._check_shape("weight_penalty", "dW", dW, W.shape)
        if W.size == 0:
            return self.cp.zeros((), np.float64)
        value = self._value("weight_penalty", value)  # written by the kernel's last block
        partials, counter = self._workspace()
        T = dtype.type
        grid = (min(_blocks(W.size, THREADS), MAX_PARTIALS), 1, 1)
        self._launch(f"weight_penalty_{self._suffix(dtype)}", grid, (THREADS, 1, 1),
                     (W, dW, np.int64(W.size), T(l1), T(l2), partials, counter, value))
        return value


    # ---- optimizer updates, in place -------------------------------------------------------------

    def _update_extras(self, kernel, dtype, hyper, skip):
        """The device-side arguments of a graph-replayed update: hyper (T[3]) and skip (int64)."""
        if hyper is not None:
            self._check(kernel, hyper=hyper)
            if hyper.dtype != dtype or hyper.size < 3:
                raise ValueError(f"cuda {kernel}: hyper must be 3 values of the parameter's dtype")
        if skip is not None and (not isinstance(skip, self.cp.ndarray) or skip.dtype != np.int64
                                 or skip.size != 1):
            raise TypeError(f"cuda {kernel}: skip must be one int64 of the backend")
        return (_NULL if hyper is None else hyper), (_NULL if skip is None else skip)

    def sgd_update(self, param, grad, velocity, lr, momentum=0.0, nesterov=False, hyper=None,
                   skip=None):
        """SGD; with ``hyper`` the kernel reads lr from hyper[0] (device memory), with ``skip``
        (one int64 in device memory) it updates nothing when that is nonzero: a replayed CUDA
        graph needs both."""
        arrays = {"param": param, "grad": grad}
        if velocity is not None:
            arrays["velocity"] = velocity
        dtype = self._check("sgd_update", **arrays)
        for label, x in arrays.items():
            self._check_shape("sgd_update", label, x, param.shape)
        hyper, skip = self._update_extras("sgd_update", dtype, hyper, skip)
        if param.size == 0:
            return
        T = dtype.type
        self._launch(f"sgd_update_{self._suffix(dtype)}", self._grid_1d(param.size), (THREADS, 1, 1),
                     (param, grad, _NULL if velocity is None else velocity, np.int64(param.size),
                      T(lr), T(momentum), np.int32(bool(nesterov)), hyper, skip))

    def adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, step, hyper=None, skip=None):
        """Adam; with ``hyper`` (a device array [lr, 1-β1^t, 1-β2^t] of the param's dtype) the
        kernel reads those three from device memory, with ``skip`` it updates nothing when that
        int64 is nonzero (both for a replayed CUDA graph)."""
        dtype = self._check("adam_update", param=param, grad=grad, m=m, v=v)
        for label, x in (("grad", grad), ("m", m), ("v", v)):
            self._check_shape("adam_update", label, x, param.shape)
        if int(step) < 1:
            raise ValueError(f"cuda adam_update: step counts from 1; got {step}")
        hyper, skip = self._update_extras("adam_update", dtype, hyper, skip)
        if param.size == 0:
            return
        T = dtype.type
        self._launch(f"adam_update_{self._suffix(dtype)}", self._grid_1d(param.size), (THREADS, 1, 1),
                     (param, grad, m, v, np.int64(param.size), T(lr), T(beta1), T(beta2), T(eps),
                      T(1.0 - beta1 ** step), T(1.0 - beta2 ** step), hyper, skip))

    # ---- CUDA graphs ------------------------------------------------------------------------

    def capture(self, fn):
        """A CUDA graph of the kernels ``fn()`` launches.

        ``fn`` runs once normally first (it compiles the kernels and allocates the backend's
        workspace), then once more on a capturing stream, where nothing runs: the kernels are
        recorded with their arguments. Nothing may allocate during the capture (reductions need
        ``value=``). Returns a graph whose ``launch()`` replays the kernels on the current stream;
        ``launches`` counts the warm-up's kernels and one launch per replay, not the recording.
        """
        fn()  # the warm-up: kernels compiled, workspace allocated
        self.synchronize()
        stream = self.cp.cuda.Stream(non_blocking=False)
        before = self.launches
        with stream:
            self._capturing = True
            try:
                stream.begin_capture()
                try:
                    fn()
                finally:
                    graph = stream.end_capture()
            finally:
                self._capturing = False
                kernels = self.launches - before
                self.launches = before
        return _Graph(self, graph, kernels)

    # ---- the fused whole-step path ------------------------------------------------------------

    def make_trainer(self, W, b, dW, db, activations, loss, optimizer="sgd", state1=(), state2=(),
                     lr=0.01, momentum=0.0, beta1=0.9, beta2=0.999, eps=1e-8, t=0, l1=0.0, l2=0.0):
        """A trainer over the given buffers (lists, one entry per dense layer) that replays each
        training step as a CUDA graph; the same arguments and semantics as the cpu backend's
        ``make_trainer`` (see GraphTrainer)."""
        return GraphTrainer(self, W, b, dW, db, activations, loss, optimizer, state1, state2,
                            lr=lr, momentum=momentum, beta1=beta1, beta2=beta2, eps=eps, t=t,
                            l1=l1, l2=l2)


class _Graph:
    """A captured sequence of kernels; ``launch()`` replays it (one graph launch)."""

    def __init__(self, backend, graph, kernels):
        self.backend, self.graph = backend, graph
        self.kernels = kernels  # kernels in the graph

    def launch(self):
        self.graph.launch(self.backend.cp.cuda.get_current_stream())
        self.backend.graph_launches += 1
        self.backend.launches += 1


# the control block of GraphTrainer, int64 words (see cuda/train.cu)
_CTL_X, _CTL_Y, _CTL_ORDER, _CTL_IDX, _CTL_STOP, _CTL_DRY, _CTL_LOSSES = range(7)
_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
_MAX_GRAPHS = 8  # captured steps kept per trainer (each holds its batch's activation buffers)


class _StepGraph:
    """One captured step for one batch size: its staging buffers, activations and graph."""

    def __init__(self, backend, layers, n, dtype, stride):
        self.n, self.stride = n, stride
        self.X = backend.empty((n, layers[0]), dtype)   # the batch is copied here by the graph
        self.Y = backend.empty((n, layers[-1]), dtype)
        self.A = [self.X] + [backend.empty((n, p), dtype) for p in layers[1:]]
        self.G = [backend.empty((n, p), dtype) for p in layers[1:]]
        self.graph = None


class GraphTrainer:
    """The cuda backend's fused training step: forward, loss, backward, penalty and update of a
    dense network replayed as one CUDA graph per step, over the model's own buffers.

    ``step(X, Y, lr, t)`` runs one step on the batch (X, Y) with learning rate lr (Adam's step
    t + 1) and returns the loss (data loss + penalty) as a float; ``epoch(X, Y, batch_size,
    order, lr, t)`` runs the minibatches rows order[s : s + batch_size] (order None: in order)
    and returns a float64 numpy array of the batch losses. The same semantics as the cpu
    backend's trainer, and the same numbers as the kernel-by-kernel Trainer (the same kernels
    with the same arguments; the penalties added to the loss in the same order).

    One graph per (batch size, stride) is captured on first use; it launches, in order:
    ``train_batch_in`` (copies the batch's rows from X and Y, whose addresses it reads from a
    control block in device memory, into the graph's staging buffers), the forward pass (one
    product per layer), the loss, the output activation's derivative (unless identity), the
    backward pass (two products per layer, one for the first), a weight penalty per layer (if
    l1 or l2), ``train_step_end`` (adds up the loss, records it in the control block, sets the
    stop flag when it is not finite, and hands lr and Adam's bias corrections to the updates)
    and the updates (one per parameter array, skipped when the stop flag is set). Everything
    that changes between steps (X's and Y's addresses, lr, Adam's bias corrections per step,
    the batch index) is in the control block, so nothing is recaptured when lr or the data
    change.

    What one call launches, counted in ``backend.launches``: ``step``: one graph launch, one
    device-to-host copy of the loss (the float it returns), and one host-to-device copy of the
    control block when X, Y, lr or t differ from the previous step's (SGD on a fixed batch, as
    ``backprop bench``: two per step; Adam: three). ``epoch``: one host-to-device copy of the
    control block (addresses, and lr and bias corrections of every batch), one graph launch
    per batch, and one device-to-host copy of the losses at the end: the only wait on the GPU.

    A loss that is not finite: ``step`` returns it and the update of that step is skipped on
    the device (parameters and optimizer state stay as they were), as on the cpu backend. In
    ``epoch`` the stop flag stays set for the rest of the epoch: the remaining batches are still
    launched (the host does not wait for the GPU), but record nothing and update nothing, so the
    model keeps the parameters it had before the first non-finite batch, and the returned array
    ends with that batch's loss, as on the cpu backend. The difference from the cpu backend is
    time only: the batches after the non-finite one still run their forward and backward passes.
    """

    def __init__(self, backend, W, b, dW, db, activations, loss, optimizer="sgd", state1=(),
                 state2=(), lr=0.01, momentum=0.0, beta1=0.9, beta2=0.999, eps=1e-8, t=0,
                 l1=0.0, l2=0.0):
        W, b, dW, db = list(W), list(b), list(dW), list(db)
        L = len(W)
        if L == 0:
            raise ValueError("make_trainer needs at least one layer")
        if not (len(b) == len(dW) == len(db) == len(activations) == L):
            raise ValueError("make_trainer: W, b, dW, db and activations need one entry per layer")
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"make_trainer: unknown optimizer {optimizer!r}; one of {_OPTIMIZERS}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; valid losses: {', '.join(LOSSES)}")
        state1, state2 = list(state1), list(state2)
        want1 = 0 if optimizer == "sgd" else 2 * L
        want2 = 2 * L if optimizer == "adam" else 0
        if len(state1) != want1 or len(state2) != want2:
            raise ValueError(f"make_trainer: optimizer {optimizer!r} needs {want1} state1 and "
                             f"{want2} state2 arrays (W0, b0, W1, b1, ...); got {len(state1)} "
                             f"and {len(state2)}")
        layers = [W[0].shape[0]]
        arrays = {}
        for l in range(L):
            if W[l].ndim != 2 or W[l].shape[0] != layers[-1]:
                raise ValueError(f"make_trainer: W[{l}] has shape {tuple(W[l].shape)}, which does "
                                 f"not chain with {layers[-1]} inputs")
            layers.append(W[l].shape[1])
            backend._check_shape("make_trainer", f"b[{l}]", b[l], (layers[-1],))
            backend._check_shape("make_trainer", f"dW[{l}]", dW[l], W[l].shape)
            backend._check_shape("make_trainer", f"db[{l}]", db[l], b[l].shape)
            arrays.update({f"W[{l}]": W[l], f"b[{l}]": b[l], f"dW[{l}]": dW[l], f"db[{l}]": db[l]})
            backend._activation("make_trainer", activations[l])
        for name, states in (("state1", state1), ("state2", state2)):
            for i, s in enumerate(states):
                backend._check_shape("make_trainer", f"{name}[{i}]", s,
                                     (W if i % 2 == 0 else b)[i // 2].shape)
                arrays[f"{name}[{i}]"] = s
        self.dtype = backend._check("make_trainer", **arrays)
        self.backend, self.layers = backend, layers
        self.W, self.b, self.dW, self.db = W, b, dW, db
        self.activations, self.loss, self.optimizer = list(activations), loss, optimizer
        self.state1, self.state2 = state1, state2
        self.lr, self.momentum = float(lr), float(momentum)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.t, self.l1, self.l2 = int(t), float(l1), float(l2)
        self._penalty = self.l1 != 0 or self.l2 != 0
        self._values = backend.zeros((1 + (L if self._penalty else 0),), np.float64)
        self._value_views = [self._values[k:k + 1].reshape(()) for k in range(self._values.size)]
        self._hyper = backend.zeros((3,), self.dtype)
        self._graphs = {}
        self._cap = 0
        self._ctl = None
        self._ctl_host = None
        self._device_key = None  # what the control block holds for a step (None: unknown)

    # ---- the control block --------------------------------------------------------------

    def _reserve(self, batches):
        """A control block with room for ``batches`` losses; a new one drops the graphs (they
        hold the old one's address)."""
        if batches <= self._cap:
            return
        self._cap = max(batches, 2 * self._cap, 16)
        self._ctl = self.backend.zeros((_CTL_LOSSES + 4 * self._cap,), np.int64)
        self._ctl_host = np.zeros(_CTL_LOSSES + 4 * self._cap, np.int64)
        self._stop = self._ctl[_CTL_STOP:_CTL_STOP + 1]
        self._graphs = {}
        self._device_key = None

    def _header(self, X, Y, order, lr, t, batches, dry=False):
        """The host copy of the control block's used part: addresses, flags and, per batch,
        [lr, 1-β1^(t+1+i), 1-β2^(t+1+i)]; returns the number of words to upload."""
        host = self._ctl_host
        host[:_CTL_LOSSES] = (X.data.ptr, Y.data.ptr, 0 if order is None else order.data.ptr, 0,
                              0, int(dry))
        table = host[_CTL_LOSSES + self._cap:].view(np.float64)
        steps = np.arange(t + 1, t + 1 + batches, dtype=np.float64)
        rows = table[:3 * batches].reshape(batches, 3)
        rows[:, 0] = lr
        if self.optimizer == "adam":
            rows[:, 1] = [1.0 - self.beta1 ** int(s) for s in steps]
            rows[:, 2] = [1.0 - self.beta2 ** int(s) for s in steps]
        else:
            rows[:, 1:] = 0.0
        return _CTL_LOSSES + self._cap + 3 * batches

    def _upload_header(self, words):
        self.backend._upload(self._ctl[:words], self._ctl_host[:words])

    # ---- the captured step ----------------------------------------------------------------

    def _graph(self, n, stride, X, Y, order):
        """The graph of one step on n rows taken at idx * stride, captured on first use (its
        warm-up run, on the rows of X and Y, records a loss but updates nothing)."""
        key = (n, stride)
        sg = self._graphs.get(key)
        if sg is None:
            sg = _StepGraph(self.backend, self.layers, n, self.dtype, stride)
            self._upload_header(self._header(X, Y, order, self.lr, self.t, 1, dry=True))
            self._device_key = None
            sg.graph = self.backend.capture(lambda: self._kernels(sg))
            if len(self._graphs) >= _MAX_GRAPHS:  # a few batch sizes are live at once
                self._graphs.pop(next(iter(self._graphs)))
            self._graphs[key] = sg
        return sg

    def _kernels(self, sg):
        bk, L, acts, sfx = self.backend, len(self.W), self.activations, self.backend._suffix(self.dtype)
        n, p_in, p_out = sg.n, self.layers[0], self.layers[-1]
        bk._launch(f"train_batch_in_{sfx}", bk._grid_1d(n * (p_in + p_out)), (THREADS, 1, 1),
                   (self._ctl, sg.X, sg.Y, np.int32(n), np.int32(p_in), np.int32(p_out),
                    np.int64(sg.stride)))
        A = sg.X
        for l in range(L):  # the model's forward pass (MLP._forward)
            A = bk.dense_forward(A, self.W[l], self.b[l], acts[l], out=sg.A[l + 1])
        _, G = bk.loss(self.loss, A, sg.Y, G=sg.G[-1], value=self._value_views[0])
        if acts[-1] != "identity":
            bk.activation_backward(G, A, acts[-1], out=G)
        for l in reversed(range(L)):  # the model's backward pass (MLP._backward), no dX
            if l == 0:
                bk.dense_backward(sg.G[0], sg.X, self.W[0], None, self.dW[0], self.db[0],
                                  need_G_prev=False)
            else:
                bk.dense_backward(sg.G[l], sg.A[l], self.W[l], acts[l - 1], self.dW[l],
                                  self.db[l], sg.G[l - 1])
        if self._penalty:  # Trainer.penalty
            for l in range(L):
                bk.weight_penalty(self.W[l], self.dW[l], self.l1, self.l2,
                                  value=self._value_views[1 + l])
        bk._launch(f"train_step_end_{sfx}", (1, 1, 1), (1, 1, 1),
                   (self._ctl, self._values, np.int32(self._values.size), np.int32(self._cap),
                    np.int64(sg.stride), self._hyper))
        params = [p for pair in zip(self.W, self.b) for p in pair]
        grads = [g for pair in zip(self.dW, self.db) for g in pair]
        for i, (param, grad) in enumerate(zip(params, grads)):  # OptimizerState.apply
            if self.optimizer == "adam":
                bk.adam_update(param, grad, self.state1[i], self.state2[i], self.lr, self.beta1,
                               self.beta2, self.eps, 1, hyper=self._hyper, skip=self._stop)
            else:
                bk.sgd_update(param, grad, self.state1[i] if self.state1 else None, self.lr,
                              self.momentum, self.optimizer == "nesterov", hyper=self._hyper,
                              skip=self._stop)

    # ---- the protocol ---------------------------------------------------------------------

    def _check_xy(self, X, Y):
        self.backend._check("trainer", X=X, Y=Y)
        if X.dtype != self.dtype:
            raise TypeError(f"cuda trainer: X is {X.dtype}, the model is {self.dtype}")
        if X.ndim != 2:
            raise ValueError(f"cuda trainer: X must be 2-D (n x p_in); got shape {tuple(X.shape)}")
        n = X.shape[0]
        self.backend._check_shape("trainer", "X", X, (n, self.layers[0]))
        self.backend._check_shape("trainer", "Y", Y, (n, self.layers[-1]))
        if n < 1:
            raise ValueError("cuda trainer: the batch is empty")
        self.backend._check_int32("trainer", n=n * max(self.layers))
        return n

    def step(self, X, Y, lr, t=0):
        """Forward, loss, backward, penalty and update (Adam's step t+1) on one batch with
        learning rate lr; returns the loss. A loss that is not finite is returned without
        updating."""
        n = self._check_xy(X, Y)
        lr, t = float(lr), int(t)
        self.lr, self.t = lr, t
        self._reserve(1)
        sg = self._graph(n, 0, X, Y, None)
        words = self._header(X, Y, None, lr, t, 1)
        key = (X.data.ptr, Y.data.ptr, self._ctl_host[_CTL_LOSSES + self._cap:words].tobytes())
        if key != self._device_key:
            self._upload_header(words)
            self._device_key = key
        sg.graph.launch()
        value = float(self.backend._download(self._ctl[_CTL_LOSSES:_CTL_LOSSES + 1]).view(np.float64)[0])
        if math.isfinite(value) and self.optimizer == "adam":
            self.t = t + 1
        return value

    def epoch(self, X, Y, batch_size, order=None, lr=None, t=0):
        """Steps over X[order] (order None: X in order) in minibatches of batch_size; returns
        each batch's loss (float64), stopping after the first batch whose loss is not finite
        (that batch not updated; see the class docstring)."""
        N = self._check_xy(X, Y)
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        lr = self.lr if lr is None else float(lr)
        t = int(t)
        self.lr, self.t = lr, t
        if order is not None:
            host_order = np.asarray(self.backend.to_numpy(order))
            if host_order.dtype != np.int64:
                raise TypeError(f"order must be an int64 array, got {host_order.dtype}")
            if host_order.shape != (N,):
                raise ValueError(f"order must have shape ({N},), got {host_order.shape}")
            if N and (host_order.min() < 0 or host_order.max() >= N):
                raise ValueError(f"order has indices out of range for {N} samples")
            order = self.backend.zeros((N,), np.int64)
            self.backend._upload(order, host_order)
        batches = -(-N // batch_size)
        self._reserve(batches)
        sizes = [min(batch_size, N - s) for s in range(0, N, batch_size)]
        graphs = {n: self._graph(n, batch_size, X, Y, order) for n in sorted(set(sizes))}
        self._upload_header(self._header(X, Y, order, lr, t, batches))
        self._device_key = None
        for n in sizes:
            graphs[n].graph.launch()
        head = self.backend._download(self._ctl[:_CTL_LOSSES + batches])
        ran = int(head[_CTL_IDX])
        losses = head[_CTL_LOSSES:_CTL_LOSSES + ran].view(np.float64).copy()
        if self.optimizer == "adam":
            self.t = t + ran - (0 if ran and np.isfinite(losses[-1]) else 1)
        return losses
