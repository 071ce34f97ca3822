"""Program building for the cuda backend: the kernel sources, their names, and the compiled module.

The sources (cuda/common.cuh, then every cuda/*.cu in name order, their includes of common.cuh
removed) are pasted into one program and compiled once per backend by CuPy's ``RawModule``
(NVRTC) with ``NVRTC_OPTIONS``. The kernels are ``extern "C"`` entry points with plain names
(``gemm_L_nn_f32``, ``loss_pointwise_f64``, ...), not templates named through
``name_expressions``: CuPy's on-disk cache (~/.cupy/kernel_cache or $CUPY_CACHE_DIR, keyed by the
source text, the options, the GPU architecture and the NVRTC version) is then reused by later
processes, which it is not for modules built with ``name_expressions`` in the CuPy releases
checked (cupy/cupy#9667, #10173).

Every kernel name the adapter launches is built by ``kernel_name`` or ``gemm_kernel_name`` here,
and ``launchable_kernels()`` lists them all from the same tables, so a test can hold that list
against the ``extern "C"`` entry points of the compiled program (tests/backends/test_cuda_nvrtc.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..base import ACTIVATIONS, BackendUnavailable

# activation and loss codes, the same numbers as BP_ACT_* and BP_LOSS_* in cuda/common.cuh
ACT_CODES = {"identity": 0, "tanh": 1, "sigmoid": 2, "relu": 3, "leaky_relu": 4}
LOSS_CODES = {"sse": 0, "mse": 1, "bce": 2}
assert set(ACT_CODES) == set(ACTIVATIONS)

# gemm configurations: name -> (BM, BN); every one runs 256 threads per block
GEMM_CONFIGS = {"L": (128, 128), "M": (64, 64), "S": (32, 32)}
GEMM_OPS = ("nn", "tn", "nt", "tt")
THREADS = 256            # BP_THREADS, the block of the 1-D kernels
MAX_PARTIALS = 1024      # BP_MAX_PARTIALS: blocks of the kernels that end in a grid-wide sum

# the kernel families other than gemm, each compiled for float32 and float64 (<family>_f32 ...)
FAMILIES = ("activation_forward", "activation_backward", "dropout", "colsum", "weight_penalty",
            "loss_pointwise", "softmax_cross_entropy", "sgd_update", "adam_update",
            "train_batch_in", "train_step_end",
            "taylor_seed", "taylor_forward_streams", "taylor_backward_streams")
SUFFIXES = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}

NVRTC_OPTIONS = ("--std=c++17",)


def kernel_name(family, dtype):
    """The entry point of ``family`` for ``dtype``, e.g. ("loss_pointwise", float32) ->
    "loss_pointwise_f32"."""
    if family not in FAMILIES:
        raise KeyError(f"no cuda kernel family {family!r}")
    return f"{family}_{SUFFIXES[np.dtype(dtype)]}"


def gemm_kernel_name(config, trans_a, trans_b, dtype):
    """The product's entry point: gemm_<config>_<op(A)op(B)>_<dtype>, e.g. gemm_L_tn_f32."""
    if config not in GEMM_CONFIGS:
        raise KeyError(f"no gemm configuration {config!r}; one of {', '.join(GEMM_CONFIGS)}")
    ops = ("t" if trans_a else "n") + ("t" if trans_b else "n")
    return f"gemm_{config}_{ops}_{SUFFIXES[np.dtype(dtype)]}"


def launchable_kernels():
    """Every kernel name the adapter can launch (built by the two functions above)."""
    names = set()
    for dtype in SUFFIXES:
        names |= {kernel_name(f, dtype) for f in FAMILIES}
        names |= {gemm_kernel_name(c, o[0] == "t", o[1] == "t", dtype)
                  for c in GEMM_CONFIGS for o in GEMM_OPS}
    return sorted(names)


def sources_dir() -> Path:
    """The folder holding cuda/*.cu: ``backprop/cuda`` in an installed package, ``cuda/`` at
    the root of a source tree, or $BACKPROP_CUDA_SOURCES."""
    here = Path(__file__).resolve().parent          # .../backprop/backends/cuda
    package = here.parent.parent                    # .../backprop
    candidates = [os.environ.get("BACKPROP_CUDA_SOURCES"), package / "cuda",
                  package.parent.parent / "cuda"]   # python/backprop -> the source tree's root
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


class Program:
    """The compiled module of one backend: compiled on first use, functions looked up once."""

    def __init__(self, cp, error):
        self.cp = cp
        self._error = error  # the exception type compile and lookup failures become
        self._module = None
        self._functions = {}

    def function(self, name):
        fn = self._functions.get(name)
        if fn is None:
            if self._module is None:
                try:
                    self._module = self.cp.RawModule(code=module_source(), options=NVRTC_OPTIONS)
                except Exception as exc:
                    raise self._error(f"compiling the cuda kernels failed: {exc}") from exc
            try:
                fn = self._functions[name] = self._module.get_function(name)
            except Exception as exc:
                raise self._error(f"cuda kernel {name!r} cannot be loaded: {exc}") from exc
        return fn
