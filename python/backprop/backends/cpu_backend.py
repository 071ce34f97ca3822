"""The cpu backend: a thin adapter over the C++ module ``backprop._cpu`` (Eigen, pybind11).

The checked layer every backend shares (base.py) checks each kernel's arguments (shapes that
chain, names, hyper-parameters, aliasing) and allocates its outputs; each ``_<kernel>`` here then
calls the native kernel of the same name, which re-checks only what protects memory (numpy
type, dtype, C-contiguity, shapes, writability, overlap) and works in place on the caller's
buffers (no copies) with the GIL released. Non-finite values are not an error at this level
(IEEE arithmetic: NaN in, NaN out); the model frontend rejects non-finite training data.

Large matrix products go to OpenBLAS, loaded at import: numpy's own copy when numpy bundles one
(one thread pool shared with numpy), else the ``scipy-openblas32`` wheel's. Narrow and small
products and all elementwise work stay in this module's kernels and Eigen, on the calling thread.
``BACKPROP_CPU_BLAS`` overrides the choice: ``eigen`` (every product in Eigen), ``numpy``,
``wheel`` (scipy-openblas32), or a path to an OpenBLAS (with ``BACKPROP_CPU_BLAS_PREFIX`` and
``BACKPROP_CPU_BLAS_SUFFIX`` for its symbol names).

Beyond the protocol, ``make_trainer`` builds the fused whole-step path: a native object that runs
forward, loss, backward, penalty and update for a batch (or an epoch of batches) in one call, on
the model's own parameter, gradient and optimizer-state buffers.
"""

from __future__ import annotations

import os

import numpy as np

from .base import Backend, BackendUnavailable
from .numpy_backend import HostMemory

try:
    from backprop import _cpu
except ImportError as exc:  # the extension was not built
    raise BackendUnavailable(
        "backend 'cpu' needs the compiled extension backprop._cpu, which is not built "
        f"({exc}); reinstall with `pip install .` on a machine with a C++17 compiler"
    ) from exc

def _numpy_openblas():
    """numpy's own OpenBLAS (the wheels bundle scipy-openblas64 in numpy.libs), or None."""
    import glob

    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "libscipy_openblas64_*.so*"))):
        return path, "scipy_", "64_", True
    for path in sorted(glob.glob(os.path.join(libs, "libscipy_openblas*.so*"))):
        return path, "scipy_", "", False
    return None


def _wheel_openblas():
    """OpenBLAS from the scipy-openblas32 wheel, or None."""
    try:
        import scipy_openblas32
    except ImportError:
        return None
    lib_dir = scipy_openblas32.get_lib_dir()
    name = scipy_openblas32.get_library()
    for candidate in (f"lib{name}.so", f"lib{name}.dylib", f"{name}.dll"):
        path = os.path.join(lib_dir, candidate)
        if os.path.exists(path):
            return path, "scipy_", "", False
    return None


def _blas_candidates():
    """The OpenBLAS libraries to try for large products, best first.

    numpy's own OpenBLAS comes first: numpy and this backend then share one thread pool, so
    neither pool's threads spin on a core the other needs (the busy-wait stall, see README).
    """
    choice = os.environ.get("BACKPROP_CPU_BLAS", "").strip()
    if choice.lower() == "eigen":
        return []
    if choice.lower() == "numpy":
        return [c for c in (_numpy_openblas(),) if c]
    if choice.lower() in ("wheel", "scipy-openblas32"):
        return [c for c in (_wheel_openblas(),) if c]
    if choice:
        prefix = os.environ.get("BACKPROP_CPU_BLAS_PREFIX", "")
        suffix = os.environ.get("BACKPROP_CPU_BLAS_SUFFIX", "")
        return [(choice, prefix, suffix, suffix.startswith("64"))]
    return [c for c in (_numpy_openblas(), _wheel_openblas()) if c]


def _load_openblas():
    errors = []
    for path, prefix, suffix, ilp64 in _blas_candidates():
        try:
            _cpu.load_blas(path, prefix, suffix, ilp64)
            return path
        except ValueError as exc:  # a broken or foreign library: try the next, then Eigen
            errors.append(str(exc))
    if errors:
        import warnings

        warnings.warn("backprop cpu backend: " + "; ".join(errors) + "; every product runs in Eigen",
                      RuntimeWarning, stacklevel=3)
    return ""


BLAS_PATH = _load_openblas()


def set_num_threads(n):
    """Threads for the cpu backend's large products (OpenBLAS's pool, numpy's when shared)."""
    _cpu.set_num_threads(int(n))


def get_num_threads():
    return _cpu.get_num_threads()


class CpuBackend(HostMemory, Backend):
    """Each kernel calls the native kernel of the same name on the buffers the checked layer
    (base.py) hands it; the native side only re-checks what protects memory."""

    name = "cpu"

    # ---- threads (backprop.set_num_threads finds them through the registry) ------------

    def set_num_threads(self, n):
        set_num_threads(n)

    def get_num_threads(self):
        return get_num_threads()

    # ---- the matrix product -----------------------------------------------------------

    def _gemm(self, A, B, out, trans_a, trans_b, alpha, beta):
        return _cpu.gemm(A, B, out, trans_a, trans_b, alpha, beta)

    # ---- one dense layer --------------------------------------------------------------

    def _dense_forward(self, A, W, b, activation, out):
        return _cpu.dense_forward(A, W, b, activation, out)

    def _dense_backward(self, G, A_prev, W, activation_prev, dW, db, G_prev):
        _cpu.dense_backward(G, A_prev, W, activation_prev, dW, db, G_prev)

    # ---- elementwise and reductions ---------------------------------------------------

    def _activation_forward(self, H, activation, out):
        return _cpu.activation_forward(H, activation, out)

    def _activation_backward(self, dA, A, activation, out):
        return _cpu.activation_backward(dA, A, activation, out)

    def _colsum(self, G, out):
        return _cpu.colsum(G, out)

    def _dropout(self, A, M, out):
        return _cpu.dropout(A, M, out)

    # ---- losses -----------------------------------------------------------------------

    def _loss(self, name, F, Y, G):
        return _cpu.loss(name, F, Y, G)

    def _weight_penalty(self, W, dW, l1, l2):
        return _cpu.weight_penalty(W, dW, l1, l2)

    # ---- optimizer updates, in place --------------------------------------------------

    def _sgd_update(self, param, grad, velocity, lr, momentum, nesterov):
        _cpu.sgd_update(param, grad, velocity, lr, momentum, nesterov)

    def _adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, step):
        _cpu.adam_update(param, grad, m, v, lr, beta1, beta2, eps, step)

    # ---- derivatives with respect to the inputs (Taylor mode) -------------------------

    # The whole network in one native call (csrc/taylor.hpp); saved's arrays are views of one
    # buffer per layer (base.taylor_forward), which the native side checks.
    def _taylor_forward(self, Ws, bs, activations, saved):
        _cpu.taylor_forward(list(saved.As), list(saved.dAs), list(saved.d2As), list(Ws), list(bs),
                            list(activations), list(saved.first), [tuple(p) for p in saved.second])

    def _taylor_backward(self, saved, Ws, activations, G, dG, d2G, dWs, dbs):
        _cpu.taylor_backward(list(saved.As), list(saved.dAs), list(saved.d2As), list(Ws),
                             list(activations), list(saved.first), [tuple(p) for p in saved.second],
                             G, dG if dG.size else None, d2G if d2G.size else None, list(dWs),
                             list(dbs))

    # ---- the fused whole-step path ----------------------------------------------------

    def make_trainer(self, net, loss, optimizer, state, l1=0.0, l2=0.0):
        """The native trainer over ``net``'s own buffers (parameters, gradients, ``state``'s slots).

        ``net`` is an MLP on this backend, ``optimizer`` a GD, SGD or Adam of ``backprop.optim`` and
        ``state`` its OptimizerState over ``net.params``. The trainer's ``step(X, Y, lr, t)`` runs
        forward, loss, backward, penalty and update t+1 (when the loss is finite) and returns the
        loss (data loss + penalty); ``epoch(X, Y, batch_size, order, lr, t)`` runs a whole epoch of
        minibatches and returns their losses. The same kernels, in the same order, as the kernel
        path (``train.gradient_kernels`` then ``OptimizerState.apply``); the step count stays with
        the caller. Hyper-parameters other than lr are read when the trainer is made. The
        optimizer is known by its ``name`` ("gd", "sgd", "adam"); any other (AdamW's decay runs
        outside the Adam kernel) is a ValueError.
        """
        name = getattr(optimizer, "name", None)
        if name not in ("gd", "sgd", "adam"):
            raise ValueError(f"make_trainer: the fused step runs GD, SGD and Adam, not "
                             f"{type(optimizer).__name__} (name {name!r})")
        slots = state.slots
        state1, state2, kind = [], [], "sgd"
        if name == "adam":
            kind = "adam"
            state1 = [s["m"] for s in slots]
            state2 = [s["v"] for s in slots]
        elif optimizer.momentum > 0:
            kind = "nesterov" if optimizer.nesterov else "momentum"
            state1 = [s["velocity"] for s in slots]
        cls = _cpu.Trainer32 if net.dtype == np.float32 else _cpu.Trainer64
        return cls(list(net.W), list(net.b), list(net.dW), list(net.db),
                   list(net.layer_activations), loss, kind, state1, state2, float(optimizer.lr),
                   float(getattr(optimizer, "momentum", 0.0)), float(getattr(optimizer, "beta1", 0.9)),
                   float(getattr(optimizer, "beta2", 0.999)), float(getattr(optimizer, "eps", 1e-8)),
                   float(l1), float(l2))
