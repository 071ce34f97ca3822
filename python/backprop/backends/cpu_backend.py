"""The cpu backend: a thin adapter over the C++ module ``backprop._cpu`` (Eigen, pybind11)."""

from __future__ import annotations

from .base import Backend, BackendUnavailable

try:
    from backprop import _cpu
except ImportError as exc:  # the extension was not built
    raise BackendUnavailable(
        "backend 'cpu' needs the compiled extension backprop._cpu, which is not built "
        f"({exc}); reinstall with `pip install .` on a machine with a C++17 compiler"
    ) from exc


class CpuBackend(Backend):
    name = "cpu"
