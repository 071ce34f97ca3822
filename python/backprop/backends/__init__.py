"""The backend registry: backends are found by name and imported only when first asked for.

A missing compiler build, CuPy or GPU therefore never breaks ``backend="numpy"``.
"""

from __future__ import annotations

import importlib

import numpy as np

from .base import ACTIVATIONS, KERNELS, LOSSES, Backend, BackendUnavailable

# name -> (module, class); the module is imported on first use.
_REGISTRY = {
    "numpy": ("backprop.backends.numpy_backend", "NumpyBackend"),
    "cpu": ("backprop.backends.cpu_backend", "CpuBackend"),
    "cuda": ("backprop.backends.cuda", "CudaBackend"),
}
_INSTANCES: dict = {}

BACKENDS = tuple(_REGISTRY)


def get_backend(name) -> Backend:
    """The backend called ``name`` ("numpy", "cpu" or "cuda"), or a Backend instance as is.

    Raises ValueError for an unknown name and BackendUnavailable (saying why and what to
    install) for a backend that cannot run on this machine.
    """
    if isinstance(name, Backend):
        return name
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; valid backends: {', '.join(_REGISTRY)}")
    if name not in _INSTANCES:
        module_name, class_name = _REGISTRY[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise BackendUnavailable(f"backend {name!r} cannot be imported: {exc}") from exc
        _INSTANCES[name] = getattr(module, class_name)()
    return _INSTANCES[name]


def array_module(array):
    """The array module of a backend's array: numpy for numpy arrays, CuPy for CuPy arrays."""
    if isinstance(array, np.ndarray):
        return np
    import cupy  # a CuPy array: cupy is installed
    return cupy.get_array_module(array)


def why_unavailable(name) -> str | None:
    """None if backend ``name`` works here, else the reason it does not."""
    try:
        get_backend(name)
    except BackendUnavailable as exc:
        return str(exc)
    return None


def available_backends() -> list:
    """The names of the backends that work on this machine, numpy first."""
    return [name for name in _REGISTRY if why_unavailable(name) is None]


__all__ = ["ACTIVATIONS", "BACKENDS", "KERNELS", "LOSSES", "Backend", "BackendUnavailable",
           "available_backends", "get_backend", "why_unavailable"]
