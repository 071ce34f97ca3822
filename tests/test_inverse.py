"""An inverse problem with the PyTorch-style optimizers: u''(x) = -λ π² sin(πx) on [-1, 1], λ
unknown (true value 1), learned with the network from noisy samples of u = sin(πx).

    loss = mse(u(x_data), u_data) + mse(u_xx(x_f) + λ π² sin(π x_f), 0)

Adam, then L-BFGS, over ``[*net.parameters(), lam]`` (examples/inverse_poisson.py's ``solve``, run here).
The full run on numpy and cpu (and cuda on a GPU); under the CPU emulator, cuda runs a short
schedule on a smaller problem, checked against numpy's and for identical bits twice."""

import functools
import importlib.util
import os
import pathlib
import re

import numpy as np
import pytest

import backprop as bp

from .conftest import RTOL

# a full run: λ ends within ~6e-4 of 1 on numpy and cpu (the data's noise limits it); λ after
# Adam alone is ~0.02 off, and λ never trained stays 1 off
FULL = dict(n_data=50, n_f=100, adam_steps=1000, lbfgs_iters=200)
SHORT = dict(n_data=20, n_f=32, adam_steps=20, lbfgs_iters=5)  # the cuda emulator's size
LAMBDA_BOUND = 5e-3  # |λ - 1| after the full run
FIT_BOUND = 2e-2  # max |u_net - sin(πx)| on [-1, 1] after the full run (observed ~2.3e-3)

EMULATED = os.environ.get("BACKPROP_TEST_CUDA_EMULATOR", "") == "1"


def _example():
    """examples/inverse_poisson.py as a module (its ``solve``)."""
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "inverse_poisson.py"
    spec = importlib.util.spec_from_file_location("inverse_poisson", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


solve = _example().solve


@functools.lru_cache(maxsize=None)
def full_run(backend):
    return solve(backend, **FULL)


def skip_emulated_cuda(backend):
    if backend == "cuda" and EMULATED:
        pytest.skip("the full run takes minutes under the CPU emulator; "
                    "test_short_run_matches_numpy runs cuda at reduced size")


def test_lambda_converges_and_the_network_fits(backend):
    skip_emulated_cuda(backend)
    out = full_run(backend)
    assert out["lam_adam"] > 0.5, f"Adam left λ at {out['lam_adam']} (it starts at 0)"
    assert abs(out["lam"] - 1.0) < LAMBDA_BOUND, f"λ = {out['lam']!r}"
    err = float(np.max(np.abs(out["u"] - np.sin(np.pi * out["grid"]))))
    assert err < FIT_BOUND, f"max |u_net - sin(πx)| = {err:.3e}"


def test_short_run_matches_numpy(backend):
    """A few Adam steps and L-BFGS iterations on a small problem: the same λ and prediction as
    numpy's in float64 (the kernels differ only in rounding: ~1e-14 observed)."""
    if backend == "numpy":
        pytest.skip("the reference")
    ref, out = solve("numpy", **SHORT), solve(backend, **SHORT)
    assert out["lam"] != 0.0
    assert abs(out["lam"] - ref["lam"]) <= RTOL["float64"] * abs(ref["lam"])
    assert np.max(np.abs(out["u"] - ref["u"])) <= RTOL["float64"] * np.max(np.abs(ref["u"]))


def test_same_run_same_bits(backend):
    size = SHORT if backend == "cuda" and EMULATED else FULL
    first = full_run(backend) if size is FULL else solve(backend, **size)
    second = solve(backend, **size)
    assert first["lam"] == second["lam"] and first["lam_adam"] == second["lam_adam"]
    assert first["u"].tobytes() == second["u"].tobytes()
    for a, b in zip(first["params"], second["params"]):
        assert a.tobytes() == b.tobytes()


@pytest.mark.skipif("cpu" not in bp.available_backends(), reason="the cpu backend is not built")
def test_readme_loop_example_runs():
    """The README's "Training any Tensors" block, as written."""
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("### Training any Tensors (PyTorch-style loop)")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert abs(scope["lam"].item() - 1.0) < LAMBDA_BOUND
