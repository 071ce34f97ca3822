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
``launches`` counts kernel launches (the benchmark reports launches per training step).

CuPy is imported when the backend is made, not when this module is imported; a CuPy-compatible
module can be passed as ``CudaBackend(cupy=...)`` (the tests run the whole backend on the CPU
that way, with the kernels compiled by the host compiler).
"""

from __future__ import annotations

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
        self._capturing = False  # inside CudaBackend.capture: no allocations, device scalars
        self._value_slots = []   # persistent 0-d results of loss/weight_penalty for graphs
        self._slot = 0
        self._recording = None
        self._hyper = {}         # dtype -> device [lr, 1-β1^t, 1-β2^t] read by a captured Adam
        self.graph_launches = 0

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
            if self.sync_each_launch:
                self.synchronize()
        except Exception as exc:
            raise CudaKernelError(f"cuda kernel {name!r} (grid {grid}, block {block}) failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
        self.launches += 1

    def _value(self):
        """A 0-d float64 device array for a reduction's result: a new one normally, a
        persistent slot while a graph is captured (the graph writes it at every replay)."""
        if not self._capturing:
            return self.cp.empty((), np.float64)
        if self._recording is not None:  # the warm-up call of capture
            value = self.cp.zeros((), np.float64)
            self._recording.append(value)
            return value
        if self._slot == len(self._value_slots):
            raise RuntimeError("cuda capture: a reduction ran during capture that did not run "
                               "during the warm-up call")
        value = self._value_slots[self._slot]
        self._slot += 1
        return value

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

    def loss(self, name, F, Y, G=None):
        """(value, G); value is a 0-d float64 CuPy array (``float(value)`` waits for it), so a
        training step needs no host round trip until the caller reads it."""
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
        value = self._value()  # written by the kernel's last block
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
    def weight_penalty(self, W, dW, l1, l2):
        dtype = self._check("weight_penalty", W=W, dW=dW)
        self._check_shape("weight_penalty", "dW", dW, W.shape)
        if W.size == 0:
            return self.cp.zeros((), np.float64)
        value = self._value()  # written by the kernel's last block
        partials, counter = self._workspace()
        T = dtype.type
        grid = (min(_blocks(W.size, THREADS), MAX_PARTIALS), 1, 1)
        self._launch(f"weight_penalty_{self._suffix(dtype)}", grid, (THREADS, 1, 1),
                     (W, dW, np.int64(W.size), T(l1), T(l2), partials, counter, value))
        return value

    # ---- optimizer updates, in place -------------------------------------------------------------

    def sgd_update(self, param, grad, velocity, lr, momentum=0.0, nesterov=False):
        arrays = {"param": param, "grad": grad}
        if velocity is not None:
            arrays["velocity"] = velocity
        dtype = self._check("sgd_update", **arrays)
        for label, x in arrays.items():
            self._check_shape("sgd_update", label, x, param.shape)
        if param.size == 0:
            return
        T = dtype.type
        self._launch(f"sgd_update_{self._suffix(dtype)}", self._grid_1d(param.size), (THREADS, 1, 1),
                     (param, grad, _NULL if velocity is None else velocity, np.int64(param.size),
                      T(lr), T(momentum), np.int32(bool(nesterov))))

    def adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, step, hyper=None):
        """Adam; with ``hyper`` (a device array [lr, 1-β1^t, 1-β2^t] of the param's dtype) the
        kernel reads those three from device memory, which a replayed CUDA graph needs."""
        dtype = self._check("adam_update", param=param, grad=grad, m=m, v=v)
        for label, x in (("grad", grad), ("m", m), ("v", v)):
            self._check_shape("adam_update", label, x, param.shape)
        if int(step) < 1:
            raise ValueError(f"cuda adam_update: step counts from 1; got {step}")
        if param.size == 0:
            return
        if hyper is None and self._capturing:  # the step changes at every replay
            hyper = self._hyper_buffer(dtype)
        T = dtype.type
        self._launch(f"adam_update_{self._suffix(dtype)}", self._grid_1d(param.size), (THREADS, 1, 1),
                     (param, grad, m, v, np.int64(param.size), T(lr), T(beta1), T(beta2), T(eps),
                      T(1.0 - beta1 ** step), T(1.0 - beta2 ** step),
                      _NULL if hyper is None else hyper))

    # ---- CUDA graphs ------------------------------------------------------------------------

    def _hyper_buffer(self, dtype):
        dtype = np.dtype(dtype)
        if dtype not in self._hyper:
            self._hyper[dtype] = self.cp.zeros((3,), dtype)
        return self._hyper[dtype]

    def set_adam_hyper(self, dtype, lr, beta1, beta2, step):
        """Writes [lr, 1-β1^step, 1-β2^step] where a captured Adam update reads them."""
        values = np.array([lr, 1.0 - beta1 ** step, 1.0 - beta2 ** step], dtype=dtype)
        self._hyper_buffer(dtype)[...] = self.cp.asarray(values)

    def capture(self, fn):
        """A CUDA graph of the kernels ``fn()`` launches.

        ``fn`` runs once normally first (it compiles the kernels and allocates every buffer; a
        function that allocates on its second call cannot be captured), then once more on a
        capturing stream, where nothing runs: the kernels are recorded. While capturing, loss
        and weight_penalty write their values into persistent 0-d arrays (written again at every
        replay) and adam_update reads lr and its bias corrections from the device array that
        ``set_adam_hyper`` fills. Returns a graph whose ``launch()`` replays the kernels.
        """
        # a blocking stream: work on the default stream (copies of the values, set_adam_hyper)
        # stays ordered with the replays
        stream = self.cp.cuda.Stream(non_blocking=False)
        with stream:
            self._capturing, self._recording = True, []
            try:
                fn()  # the warm-up: kernels compiled, buffers and value slots allocated
                self._value_slots, self._recording, self._slot = self._recording, None, 0
                stream.synchronize()
                before = self.launches
                stream.begin_capture()
                try:
                    fn()
                finally:
                    graph = stream.end_capture()
                kernels = self.launches - before
            finally:
                self._capturing, self._recording = False, None
        return _Graph(self, graph, stream, kernels, list(self._value_slots))


class _Graph:
    """A captured sequence of kernels; ``launch()`` replays it (one graph launch)."""

    def __init__(self, backend, graph, stream, kernels, values):
        self.backend, self.graph, self.stream = backend, graph, stream
        self.kernels = kernels  # kernels in the graph: the launches one replay stands for
        self.values = values    # the 0-d results (loss, penalties) the replay writes

    def launch(self):
        self.graph.launch(self.stream)
        self.backend.graph_launches += 1
        return self.values


class GraphTrainStep:
    """One training step of an MLP (forward, loss, backward, penalty, optimizer update) as a
    CUDA graph: one launch from the host per step instead of one per kernel.

        step = GraphTrainStep(trainer, X, Y)    # X, Y: arrays of the cuda backend, fixed batch
        value = step()                           # the loss before the update, a 0-d device array

    ``trainer`` is a ``backprop.train.Trainer`` (SGD or Adam, any l1/l2, no dropout: its masks
    are drawn on the host at every step). The step counter and the learning rate are read when
    the graph is launched (Adam through the device array of ``set_adam_hyper``; a changed SGD
    learning rate captures the graph again). The numbers are those of ``trainer.step``.
    """

    def __init__(self, trainer, X, Y):
        self.trainer, self.net, self.X, self.Y = trainer, trainer.net, X, Y
        self.backend = self.net.backend
        if not isinstance(self.backend, CudaBackend):
            raise TypeError("GraphTrainStep needs a network on the cuda backend")
        if any(trainer.dropout):
            raise ValueError("GraphTrainStep: dropout masks are drawn on the host at every step; "
                             "train with dropout through Trainer.step")
        self._graph = None
        self._lr = None

    def _kernels(self):
        net, tr, backend = self.net, self.trainer, self.backend
        value, _ = net._loss_and_grad(self.X, self.Y, tr.loss)
        if tr.l1 or tr.l2:
            for W, dW in zip(net._W, net._dW):
                backend.weight_penalty(W, dW, tr.l1, tr.l2)
        state = tr.state
        for param, grad, slots in zip(net.params, net.grads, state.slots):
            tr.optimizer.update(backend, param, grad, slots, max(state.step, 1))

    def __call__(self):
        opt, state = self.trainer.optimizer, self.trainer.state
        adam = hasattr(opt, "beta1")
        if self._graph is None or (not adam and opt.lr != self._lr):
            live = self.net.params + [s for d in state.slots for s in d.values()]
            snapshot = [p.copy() for p in live]
            if adam:
                self.backend.set_adam_hyper(self.net.dtype, opt.lr, opt.beta1, opt.beta2, state.step + 1)
            self._graph = self.backend.capture(self._kernels)
            # the warm-up call of capture updated the parameters: put them back
            for dst, src in zip(live, snapshot):
                dst[...] = src
            self._lr = opt.lr
        state.step += 1
        if adam:
            self.backend.set_adam_hyper(self.net.dtype, opt.lr, opt.beta1, opt.beta2, state.step)
        values = self._graph.launch()
        return values[0] if len(values) == 1 else sum(values[1:], values[0])

    @property
    def kernels(self):
        """Kernels replayed per step (0 before the first call)."""
        return 0 if self._graph is None else self._graph.kernels
