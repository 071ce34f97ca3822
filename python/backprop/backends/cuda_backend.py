"""The cuda backend: the kernels of cuda/*.cu, compiled at run time by CuPy RawModule."""

from __future__ import annotations

from .base import Backend, BackendUnavailable

try:
    import cupy
except ImportError as exc:
    raise BackendUnavailable(
        "backend 'cuda' needs CuPy, which is not installed: pip install '.[cuda12]' "
        "(or '.[cuda13]') on a machine with an NVIDIA GPU"
    ) from exc


class CudaBackend(Backend):
    name = "cuda"
