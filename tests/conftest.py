"""Shared fixtures: every test that takes ``backend`` runs on every backend, skipped with the
reason when a backend cannot run on this machine; ``dtype`` runs float32 and float64."""

import numpy as np
import pytest

import backprop as bp
from backprop.backends import BACKENDS, why_unavailable

from .cuda_emu import install_if_requested

install_if_requested()  # BACKPROP_TEST_CUDA_EMULATOR=1: the "cuda" backend runs under emulation

# relative tolerance of a backend against a float64 reference, per dtype
RTOL = {"float32": 1e-4, "float64": 1e-10}


def _backend_params():
    params = []
    for name in BACKENDS:
        reason = why_unavailable(name)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(params=_backend_params())
def backend(request):
    return request.param


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def assert_close(actual, expected, dtype, scale=None, what=""):
    """|actual - expected| <= RTOL[dtype] * max(|expected|) elementwise (the scale of the array)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if scale is None:
        scale = max(float(np.max(np.abs(expected))) if expected.size else 0.0, 1e-30)
    err = float(np.max(np.abs(actual - expected))) / scale if expected.size else 0.0
    assert err <= RTOL[str(dtype)], f"{what}: relative error {err:.3e} > {RTOL[str(dtype)]:.0e}"


# every optimizer the fused paths cover, by name (fresh object per call)
OPTIMIZERS = {
    "gd": lambda: bp.optim.GD(lr=0.05),
    "sgd": lambda: bp.optim.SGD(lr=0.05),
    "momentum": lambda: bp.optim.SGD(lr=0.05, momentum=0.9),
    "nesterov": lambda: bp.optim.SGD(lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda: bp.optim.Adam(lr=1e-2),
}
