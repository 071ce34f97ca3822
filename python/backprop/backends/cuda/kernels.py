"""The protocol kernels of the cuda backend: ``CudaBackend`` implements base.py's ``_<kernel>``.

base.Backend checks every call (arrays of this backend, dtypes, shapes, names, aliasing) and
allocates missing outputs; the methods here assume all of that and keep only the limits of the
CUDA kernels themselves (sizes within the kernels' 32-bit indices, tile columns within the
grid's y limit), checked before the first launch of a call. Each kernel is one or two launches
of the project's own kernels (no cuBLAS):

    gemm, dense_forward     one tiled product, bias + activation fused into its epilogue
    dense_backward          dW = A_prevᵀ G with db = 1ᵀ G fused into it, then
                            G_prev = act'(A_prev) ⊙ (G Wᵀ) with the Hadamard in the epilogue
    loss, weight_penalty    one launch each (after a memset of the counter): gradient, block
                            sums, last-block total
    taylor_forward          per layer: dense_forward's product, one product per stream kind
                            (all the streams stacked), one elementwise launch (cuda/taylor.cu)
    taylor_backward         per layer: the stream products again, one elementwise launch, three
                            products into dW (db fused into the first), three for the layer below
    the rest                one elementwise launch each

The reductions (loss, weight_penalty) end in a grid-wide sum finished by the last block to
arrive, counted by one counter per backend. The counter is set to 0 right before every
reduction launch (a memset, captured with the kernel in a graph), and the last block sets it
back to 0. Block 0 first sets the value to NaN, and the last block, after writing the value,
sets the block sums to NaN; so a counter that is not 0 when a reduction starts gives NaN, not a
silent wrong number.

Arrays are CuPy arrays in device memory; CuPy is imported when the backend is made, not when
this module is imported, and a CuPy-compatible module can be passed as ``CudaBackend(cupy=...)``
(the tests run the whole backend on the CPU that way, with the kernels compiled by the host
compiler).
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..base import Backend, BackendUnavailable
from . import graph as _graph
from .launch import NULL, CudaKernelError, Launcher, blocks
from .program import (ACT_CODES, GEMM_CONFIGS, LOSS_CODES, MAX_PARTIALS, THREADS, Program,
                      gemm_kernel_name, kernel_name)
from .trainer import GraphTrainer

MAX_GRID_1D = 65535 * 4  # blocks of a grid-stride elementwise launch
INT32_MAX = 2**31 - 1
GRID_Y_MAX = 65535

_INSTALL = ("pip install '.[cuda12]' (CUDA 12 driver) or '.[cuda13]' (CUDA 13 driver) on a "
            "machine with an NVIDIA GPU (CuPy 14: Python >= 3.10, numpy >= 2)")


def _import_cupy():
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailable(f"backend 'cuda' needs CuPy, which is not installed ({exc}): "
                                 f"{_INSTALL}") from exc
    return cupy


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
        self.launcher = Launcher(cp, Program(cp, CudaKernelError))
        self._sms = int(cp.cuda.Device().attributes.get("MultiProcessorCount", 1))
        self._partials = None   # MAX_PARTIALS doubles: block sums of the reducing kernels
        self._counter = None    # one unsigned int: blocks done, rearmed by the last block
        self._graph_ctx = None  # the GraphContext of graph_mode, or None
        self._forced_config = None

    # ---- launches (launch.py) and their counts ----------------------------------------------

    launches = property(lambda self: self.launcher.launches)
    graph_launches = property(lambda self: self.launcher.graph_launches)
    copies = property(lambda self: self.launcher.copies)

    def _launch(self, name, grid, block, args):
        self.launcher.launch(name, grid, block, args)

    @staticmethod
    def _check_int32(kernel, **dims):
        for label, d in dims.items():
            if d > INT32_MAX:
                raise ValueError(f"cuda {kernel}: {label} = {d} exceeds the 32-bit index range "
                                 f"of the kernel ({INT32_MAX})")

    def _grid_1d(self, size):
        return (max(1, min(blocks(size, THREADS), MAX_GRID_1D)), 1, 1)

    # ---- the reductions' workspace ----------------------------------------------------------

    def reduction_workspace(self):
        """(partials, counter) of the grid-wide sums."""
        if self._partials is None:
            self._partials = self.cp.full((MAX_PARTIALS,), np.nan, np.float64)
            self._counter = self.cp.zeros((1,), np.uint32)
        return self._partials, self._counter

    def _reset_counter(self, counter):
        """counter = 0, on the current stream, right before a reduction launch (a memset node
        when captured); counted in ``launches``."""
        cp = self.cp
        cp.cuda.runtime.memsetAsync(counter.data.ptr, 0, counter.nbytes,
                                    cp.cuda.get_current_stream().ptr)
        self.launcher.launches += 1

    def reset_reductions(self):
        """Zero the counter and poison the block sums, now."""
        partials, counter = self.reduction_workspace()
        partials.fill(np.nan)
        counter.fill(0)

    def _value(self, kernel):
        """The 0-d float64 device array a reduction writes its value into: the next slot of the
        graph context in graph mode, else a new array (refused while capturing without one)."""
        if self._graph_ctx is not None:
            return self._graph_ctx.next_value(kernel)
        if self.launcher.capturing:
            raise RuntimeError(f"cuda {kernel} inside a captured graph needs graph mode "
                               "(backend.graph_mode(ctx): its value goes to a slot of ctx.values)")
        return self.cp.empty((), np.float64)

    # ---- graph mode and capture (graph.py) --------------------------------------------------

    @contextlib.contextmanager
    def graph_mode(self, ctx):
        """Reductions write ctx's value slots, updates read ctx.hyper and honour ctx.skip (see
        graph.py). Used by the graph code only."""
        if self._graph_ctx is not None:
            raise RuntimeError("cuda graph_mode: already in graph mode")
        self._graph_ctx, ctx.used = ctx, 0
        try:
            yield ctx
        finally:
            self._graph_ctx = None

    def capture(self, fn):
        return _graph.capture(self, fn)

    # ---- memory -----------------------------------------------------------------------------

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
        self.launcher.synchronize()

    def is_array(self, x):
        return isinstance(x, self.cp.ndarray)

    is_device_array = is_array  # the model keeps predictions of device inputs on the device

    @staticmethod
    def _extent(x):
        """[lo, hi): the bytes array x can touch, from its start address, shape and strides."""
        lo = hi = int(x.data.ptr)
        for size, stride in zip(x.shape, x.strides):
            if stride >= 0:
                hi += (size - 1) * stride
            else:
                lo += (size - 1) * stride
        return lo, hi + x.itemsize

    def may_overlap(self, x, y):
        if x.size == 0 or y.size == 0:
            return False
        (a0, a1), (b0, b1) = self._extent(x), self._extent(y)
        return a0 < b1 and b0 < a1

    def same_buffer(self, x, y):
        return (int(x.data.ptr) == int(y.data.ptr) and tuple(x.shape) == tuple(y.shape)
                and tuple(x.strides) == tuple(y.strides) and x.dtype == y.dtype)

    # ---- the matrix product -------------------------------------------------------------------

    def gemm_config(self, m, n):
        """The tile configuration for an m x n product: the largest tiles that still give every
        multiprocessor a block (L for the big products, S for the launch-bound small ones), or
        the one forced by ``gemm_config_forced``."""
        if self._forced_config is not None:
            return self._forced_config
        for cfg in ("L", "M"):
            bm, bn = GEMM_CONFIGS[cfg]
            if blocks(m, bm) * blocks(n, bn) >= self._sms:
                return cfg
        return "S"

    @contextlib.contextmanager
    def gemm_config_forced(self, config):
        """Every product inside uses tile configuration ``config`` (tests, benchmarks)."""
        if config not in GEMM_CONFIGS:
            raise ValueError(f"unknown gemm configuration {config!r}; one of {', '.join(GEMM_CONFIGS)}")
        saved, self._forced_config = self._forced_config, config
        try:
            yield
        finally:
            self._forced_config = saved

    def _product_grid(self, kernel, m, n, k):
        """(config, grid) of an m x n x k product, its limits checked before any launch."""
        self._check_int32(kernel, m=m, n=n, k=k)
        cfg = self.gemm_config(m, n)
        bm, bn = GEMM_CONFIGS[cfg]
        grid = (blocks(m, bm), blocks(n, bn), 1)  # rows of tiles along x, columns along y
        if grid[1] > GRID_Y_MAX:
            raise ValueError(f"cuda {kernel}: {n} columns need {grid[1]} column tiles, more than "
                             f"the grid allows ({GRID_Y_MAX})")
        return cfg, grid

    def _product(self, plan, A, B, C, m, n, k, trans_a, trans_b, alpha, beta, bias=None, act=0,
                 D=None, dact=0, colsum=None):
        """One launch of gemm_<cfg>_<ops>_<dtype>: C = epi(alpha op(A) op(B) + beta C)."""
        cfg, grid = plan
        T = C.dtype.type
        self._launch(gemm_kernel_name(cfg, trans_a, trans_b, C.dtype), grid, (THREADS, 1, 1),
                     (A, B, C, np.int32(m), np.int32(n), np.int32(k), T(alpha), T(beta),
                      NULL if bias is None else bias, np.int32(act),
                      NULL if D is None else D, np.int32(dact),
                      NULL if colsum is None else colsum))
        return C

    def _gemm(self, A, B, out, trans_a, trans_b, alpha, beta):
        m, k = A.shape[::-1] if trans_a else A.shape
        n = B.shape[0] if trans_b else B.shape[1]
        plan = self._product_grid("gemm", m, n, k)
        return self._product(plan, A, B, out, m, n, k, trans_a, trans_b, alpha, beta)

    # ---- one dense layer --------------------------------------------------------------------

    # A_next = act(A W + b): one launch, bias and activation in the product's epilogue
    def _dense_forward(self, A, W, b, activation, out):
        n, p_in = A.shape
        p_out = W.shape[1]
        plan = self._product_grid("dense_forward", n, p_out, p_in)
        return self._product(plan, A, W, out, n, p_out, p_in, False, False, 1.0, 0.0, bias=b,
                             act=ACT_CODES[activation])

    # dW = A_prevᵀ G and db = 1ᵀ G in one launch (db summed from the G tiles the product loads),
    # G_prev = act'(A_prev) ⊙ (G Wᵀ) in a second (the Hadamard in the product's epilogue)
    def _dense_backward(self, G, A_prev, W, activation_prev, dW, db, G_prev):
        n, p_out = G.shape
        p_in = W.shape[0]
        plan_dW = self._product_grid("dense_backward", p_in, p_out, n)
        plan_G = self._product_grid("dense_backward", n, p_in, p_out) if G_prev is not None else None
        self._product(plan_dW, A_prev, G, dW, p_in, p_out, n, True, False, 1.0, 0.0, colsum=db)
        if G_prev is not None:
            self._product(plan_G, G, W, G_prev, n, p_in, p_out, False, True, 1.0, 0.0,
                          D=None if activation_prev is None else A_prev,
                          dact=0 if activation_prev is None else ACT_CODES[activation_prev])

    # ---- elementwise and reductions ---------------------------------------------------------

    # A = act(H)   (out may be H)
    def _activation_forward(self, H, activation, out):
        self._launch(kernel_name("activation_forward", H.dtype), self._grid_1d(H.size),
                     (THREADS, 1, 1), (H, out, np.int64(H.size), np.int32(ACT_CODES[activation])))
        return out

    # G = dA ⊙ act'(A)   (out may be dA)
    def _activation_backward(self, dA, A, activation, out):
        self._launch(kernel_name("activation_backward", dA.dtype), self._grid_1d(dA.size),
                     (THREADS, 1, 1), (dA, A, out, np.int64(dA.size), np.int32(ACT_CODES[activation])))
        return out

    # db = 1ᵀ G: a column sum by a tree reduction per block; rows split over blocks (and a
    # second launch adding the partial sums) when there are too few columns to fill the GPU
    def _colsum(self, G, out):
        n, p = G.shape
        self._check_int32("colsum", n=n, p=p)
        name = kernel_name("colsum", G.dtype)
        col_blocks = blocks(p, 32)
        splits = min(blocks(n, 256), max(1, (2 * self._sms) // col_blocks), 1024)
        if splits <= 1:
            self._launch(name, (col_blocks, 1, 1), (32, 8, 1), (G, out, np.int32(n), np.int32(p)))
            return out
        partial = self.cp.empty((splits, p), G.dtype)
        self._launch(name, (col_blocks, splits, 1), (32, 8, 1), (G, partial, np.int32(n), np.int32(p)))
        self._launch(name, (col_blocks, 1, 1), (32, 8, 1), (partial, out, np.int32(splits), np.int32(p)))
        return out

    # A ⊙ M   (out may be A)
    def _dropout(self, A, M, out):
        self._launch(kernel_name("dropout", A.dtype), self._grid_1d(A.size), (THREADS, 1, 1),
                     (A, M, out, np.int64(A.size)))
        return out

    # ---- losses -------------------------------------------------------------------------------

    def _loss(self, name, F, Y, G):
        """Writes G; the value is a 0-d float64 CuPy array (``float(value)`` waits for it), so a
        training step needs no host round trip until the caller reads it."""
        n, k = F.shape
        partials, counter = self.reduction_workspace()
        value = self._value("loss")  # written by the kernel's last block
        self._reset_counter(counter)
        if name == "cross_entropy":
            self._check_int32("loss", n=n, k=k)
            grid = (min(blocks(n, 8), MAX_PARTIALS), 1, 1)
            self._launch(kernel_name("softmax_cross_entropy", F.dtype), grid, (32, 8, 1),
                         (F, Y, G, np.int32(n), np.int32(k), partials, counter, value))
            return value
        size = F.size
        gscale, vscale = {"sse": (1.0, 0.5), "mse": (2.0 / size, 1.0 / size),
                          "bce": (1.0 / size, 1.0 / size)}[name]
        grid = (min(blocks(size, THREADS), MAX_PARTIALS), 1, 1)
        self._launch(kernel_name("loss_pointwise", F.dtype), grid, (THREADS, 1, 1),
                     (np.int32(LOSS_CODES[name]), F, Y, G, np.int64(size), F.dtype.type(gscale),
                      np.float64(vscale), partials, counter, value))
        return value

    # penalty = l1 Σ|W| + (l2/2) Σ W²,  dW += l1 sign(W) + l2 W; the value as a 0-d array
    def _weight_penalty(self, W, dW, l1, l2):
        partials, counter = self.reduction_workspace()
        value = self._value("weight_penalty")  # written by the kernel's last block
        self._reset_counter(counter)
        T = W.dtype.type
        grid = (min(blocks(W.size, THREADS), MAX_PARTIALS), 1, 1)
        self._launch(kernel_name("weight_penalty", W.dtype), grid, (THREADS, 1, 1),
                     (W, dW, np.int64(W.size), T(l1), T(l2), partials, counter, value))
        return value

    # ---- optimizer updates, in place ----------------------------------------------------------

    def _graph_extras(self, dtype):
        """hyper and skip of graph mode (see graph.py), or null pointers outside it."""
        ctx = self._graph_ctx
        if ctx is None:
            return NULL, NULL
        if ctx.hyper.dtype != dtype:
            raise TypeError(f"cuda update in graph mode: the context's hyper is {ctx.hyper.dtype}, "
                            f"the parameters are {dtype}")
        return ctx.hyper, (NULL if ctx.skip is None else ctx.skip)

    def _sgd_update(self, param, grad, velocity, lr, momentum, nesterov):
        T = param.dtype.type
        hyper, skip = self._graph_extras(param.dtype)
        self._launch(kernel_name("sgd_update", param.dtype), self._grid_1d(param.size),
                     (THREADS, 1, 1),
                     (param, grad, NULL if velocity is None else velocity, np.int64(param.size),
                      T(lr), T(momentum), np.int32(bool(nesterov)), hyper, skip))

    def _adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, step):
        T = param.dtype.type
        hyper, skip = self._graph_extras(param.dtype)
        self._launch(kernel_name("adam_update", param.dtype), self._grid_1d(param.size),
                     (THREADS, 1, 1),
                     (param, grad, m, v, np.int64(param.size), T(lr), T(beta1), T(beta2), T(eps),
                      T(1.0 - beta1 ** step), T(1.0 - beta2 ** step), hyper, skip))

    # ---- derivatives with respect to the inputs (Taylor mode) ---------------------------------

    # The streams of a layer are stacked: s x n x p, one (s n) x p matrix for the products, so each
    # stream product (Ḣ = Ȧ W, Ḧ = Ä W, Σ_a Ȧ_aᵀ ĠH_a, Ġ_A = ĠH Wᵀ, ...) is one gemm launch for
    # all the streams. The arrays of TaylorSaved are used in place when C-contiguous, else
    # through a contiguous copy (written back when it is an output).

    def _contiguous(self, x):
        return x if x.flags.c_contiguous else self.cp.ascontiguousarray(x)

    @staticmethod
    def _written_back(x, work):
        if work is not x:
            x[...] = work

    def _stacked_product(self, kernel, X, B, out, trans_a, trans_b, beta, colsum=None):
        """out = op(X) op(B) + beta out, X and out stacked streams read as (s n) x p matrices."""
        rows, p = int(np.prod(X.shape[:-1], dtype=np.int64)), X.shape[-1]
        if trans_a:      # out (p x p') = Xᵀ B, B stacked (s n) x p'
            m, n, k = p, out.shape[-1], rows
        else:            # out (s n x p') = X op(B)
            m, n, k = rows, out.shape[-1], p
        if m == 0 or n == 0 or (k == 0 and beta != 0.0):
            return out
        plan = self._product_grid(kernel, m, n, k)
        return self._product(plan, X, B, out, m, n, k, trans_a, trans_b, 1.0, beta, colsum=colsum)

    def _taylor_indices(self, values):
        """A device int32 array of ``values`` (flattened), NULL when empty."""
        flat = np.asarray(values, dtype=np.int32).reshape(-1)
        return self.cp.asarray(flat) if flat.size else NULL

    # H = A W + b, Ḣ_a = Ȧ_a W, Ḧ_q = Ä_q W by gemm (A' = act(H) in the first one's epilogue),
    # then Ȧ'_a = σ1 ⊙ Ḣ_a, Ä'_q = σ2 ⊙ Ḣ_a ⊙ Ḣ_c + σ1 ⊙ Ḧ_q in one elementwise launch
    # (taylor_forward_streams, in place over the products); layer 0's streams by taylor_seed.
    def _taylor_forward(self, Ws, bs, activations, saved):
        As, dAs, d2As = saved.As, saved.dAs, saved.d2As
        k1, k2 = len(saved.first), len(saved.second)
        n, d = As[0].shape
        dtype = As[0].dtype
        self._check_int32("taylor_forward", n=n, streams=max(k1, k2, 1) * n)
        pairs = self._taylor_indices(saved.second)
        dA, d2A = self._contiguous(dAs[0]), self._contiguous(d2As[0])
        m = n * d
        self._launch(kernel_name("taylor_seed", dtype), self._grid_1d(m), (THREADS, 1, 1),
                     (dA, d2A, self._taylor_indices(saved.first), np.int64(m), np.int32(d),
                      np.int32(k1), np.int32(k2)))
        for l, (W, b, act) in enumerate(zip(Ws, bs, activations)):
            self._dense_forward(As[l], W, b, act, As[l + 1])
            dA_next, d2A_next = self._contiguous(dAs[l + 1]), self._contiguous(d2As[l + 1])
            self._stacked_product("taylor_forward", dA, W, dA_next, False, False, 0.0)
            self._stacked_product("taylor_forward", d2A, W, d2A_next, False, False, 0.0)
            m = n * W.shape[1]
            self._launch(kernel_name("taylor_forward_streams", dtype), self._grid_1d(m),
                         (THREADS, 1, 1),
                         (As[l + 1], dA_next, d2A_next, pairs, np.int64(m), np.int32(k1),
                          np.int32(k2), np.int32(ACT_CODES[act])))
            self._written_back(dAs[l], dA)
            self._written_back(d2As[l], d2A)
            dA, d2A = dA_next, d2A_next
        self._written_back(dAs[-1], dA)
        self._written_back(d2As[-1], d2A)

    # Per layer, from the last: Ḣ = Ȧ W and Ḧ = Ä W again (gemm), then GH, ĠH, G̈H in one
    # elementwise launch (taylor_backward_streams; the equations in cuda/taylor.cu), then
    # dW = Aᵀ GH (db = 1ᵀ GH fused) + Ȧᵀ ĠH + Äᵀ G̈H (stacked: one launch per term, the last two
    # accumulating with beta = 1) and the gradients of the layer below GH Wᵀ, ĠH Wᵀ, G̈H Wᵀ.
    def _taylor_backward(self, saved, Ws, activations, G, dG, d2G, dWs, dbs):
        cp = self.cp
        As = saved.As
        k1, k2 = len(saved.first), len(saved.second)
        n = As[0].shape[0]
        dtype = G.dtype
        pairs = self._taylor_indices(saved.second)
        GA, dGA, d2GA = self._contiguous(G), self._contiguous(dG), self._contiguous(d2G)
        for l in range(len(Ws) - 1, -1, -1):
            W = Ws[l]
            p, p2 = W.shape
            dA, d2A = self._contiguous(saved.dAs[l]), self._contiguous(saved.d2As[l])
            dH = cp.empty((k1, n, p2), dtype)
            self._stacked_product("taylor_backward", dA, W, dH, False, False, 0.0)
            d2H = NULL
            if k2:
                d2H = cp.empty((k2, n, p2), dtype)
                self._stacked_product("taylor_backward", d2A, W, d2H, False, False, 0.0)
            GH = cp.empty((n, p2), dtype)
            dGH, d2GH = cp.empty((k1, n, p2), dtype), cp.empty((k2, n, p2), dtype)
            m = n * p2
            self._launch(kernel_name("taylor_backward_streams", dtype), self._grid_1d(m),
                         (THREADS, 1, 1),
                         (As[l + 1], GA, dGA, d2GA, dH, d2H, pairs, GH, dGH, d2GH, np.int64(m),
                          np.int32(k1), np.int32(k2), np.int32(ACT_CODES[activations[l]])))
            dW, db = self._contiguous(dWs[l]), self._contiguous(dbs[l])
            plan = self._product_grid("taylor_backward", p, p2, n)
            self._product(plan, As[l], GH, dW, p, p2, n, True, False, 1.0, 0.0, colsum=db)
            self._stacked_product("taylor_backward", dA, dGH, dW, True, False, 1.0)
            self._stacked_product("taylor_backward", d2A, d2GH, dW, True, False, 1.0)
            self._written_back(dWs[l], dW)
            self._written_back(dbs[l], db)
            if l > 0:
                GA = cp.empty((n, p), dtype)
                self._stacked_product("taylor_backward", GH, W, GA, False, True, 0.0)
                dGA_next, d2GA_next = cp.empty((k1, n, p), dtype), cp.empty((k2, n, p), dtype)
                self._stacked_product("taylor_backward", dGH, W, dGA_next, False, True, 0.0)
                self._stacked_product("taylor_backward", d2GH, W, d2GA_next, False, True, 0.0)
                dGA, d2GA = dGA_next, d2GA_next

    # ---- the fused whole-step path (trainer.py) -----------------------------------------------

    def make_trainer(self, net, loss, optimizer, state, l1=0.0, l2=0.0):
        """A trainer that replays each training step of ``net`` (an MLP on this backend) as a
        CUDA graph of the frontend's own kernels: ``step(X, Y, lr, t)`` and
        ``epoch(X, Y, batch_size, order, lr, t)`` (see trainer.GraphTrainer)."""
        return GraphTrainer(self, net, loss, optimizer, state, l1=l1, l2=l2)
