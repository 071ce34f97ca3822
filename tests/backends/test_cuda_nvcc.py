"""Every cuda/*.cu compiles with nvcc for sm_80 and sm_90 without a warning, and the one program
the backend hands to NVRTC (the sources pasted together) compiles too.

Skipped, with the reason, only where nvcc is not on the machine.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from backprop.backends.cuda import module_source, sources_dir

NVCC = os.environ.get("NVCC") or shutil.which("nvcc") or (
    "/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this machine")

ARCHS = ["sm_80", "sm_90"]
SOURCES = sorted(sources_dir().glob("*.cu"))


def nvcc(args, tmp_path):
    cmd = [NVCC, "-std=c++17", "-Werror", "all-warnings", "-Xptxas", "-warn-spills",
           "-Xptxas", "-Werror", *args, "-o", str(tmp_path / "out.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc, " ".join(cmd)


def test_every_family_has_a_source():
    names = {p.name for p in SOURCES}
    assert {"gemm.cu", "elementwise.cu", "reduce.cu", "loss.cu", "optim.cu"} <= names


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_source_compiles_without_warnings(source, arch, tmp_path):
    proc, cmd = nvcc([f"-arch={arch}", "-c", str(source)], tmp_path)
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0, f"{cmd}\n{output}"
    assert "warning" not in output.lower(), f"{cmd}\n{output}"


@pytest.mark.parametrize("arch", ARCHS)
def test_nvrtc_program_compiles(arch, tmp_path):
    """The text given to RawModule (common.cuh first, includes removed) is one valid program."""
    program = tmp_path / "program.cu"
    program.write_text(module_source())
    proc, cmd = nvcc([f"-arch={arch}", "-c", str(program)], tmp_path)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}{proc.stderr}"
