"""Thread control for the native backends: ``bp.set_num_threads(n)``, ``bp.get_num_threads()``.

The cpu backend runs its large matrix products on OpenBLAS threads (numpy's own OpenBLAS when numpy
bundles one, so numpy and the backend share one pool and numpy's products follow this setting too),
its Taylor-mode kernels on as many threads of their own (started per call, same bits on any
count), and everything else on the calling thread. The default comes from ``OPENBLAS_NUM_THREADS`` or
``OMP_NUM_THREADS``, else the number of cores.
"""

from __future__ import annotations

import os

from .backends import BackendUnavailable, get_backend


def _cpu_backend():
    """The cpu backend (found by name in the registry), or None where it cannot run."""
    try:
        return get_backend("cpu")
    except BackendUnavailable:
        return None


def set_num_threads(n):
    """Use ``n`` threads (>= 1) for the cpu backend's products."""
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"the number of threads must be an integer >= 1; got {n!r}")
    cpu = _cpu_backend()
    if cpu is not None:
        cpu.set_num_threads(int(n))


def get_num_threads():
    """The cpu backend's thread count (the core count when the backend is not built)."""
    cpu = _cpu_backend()
    if cpu is None:
        return os.cpu_count() or 1
    return cpu.get_num_threads()
