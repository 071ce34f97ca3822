"""The program the cuda backend hands to CuPy's RawModule, compiled by NVRTC itself (the runtime
compiler, which needs no GPU) with the backend's options, for sm_80 and sm_90, without warnings;
every kernel the backend launches is in the compiled program.

NVRTC is looked for as libnvrtc in the pip wheels (nvidia-cuda-nvrtc, nvidia-cuda-nvrtc-cu12,
installed by the cuda12/cuda13 extras) and the CUDA toolkit; skipped, with the reason, if absent.
"""

import ctypes
import glob
import os
import re
import site
import sys

import pytest

from backprop.backends.cuda_backend import NVRTC_OPTIONS, module_source


def find_nvrtc():
    roots = site.getsitepackages() + [site.getusersitepackages()] + sys.path
    patterns = [os.path.join(r, "nvidia", "*", "lib", "libnvrtc.so*") for r in roots]
    patterns += [os.path.join(r, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*") for r in roots]
    patterns += ["/usr/local/cuda/lib64/libnvrtc.so*", "/usr/local/cuda-*/lib64/libnvrtc.so*"]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            if "builtins" not in path and "alt" not in path:
                try:
                    return ctypes.CDLL(path), path
                except OSError:
                    continue
    return None, None


NVRTC, NVRTC_PATH = find_nvrtc()
pytestmark = pytest.mark.skipif(NVRTC is None, reason="NVRTC (libnvrtc) is not installed here "
                                "(pip install nvidia-cuda-nvrtc, or a CUDA toolkit)")


def compile_program(source, options):
    prog = ctypes.c_void_p()
    check = lambda rc, what: rc == 0 or pytest.fail(f"{what} returned {rc}")  # noqa: E731
    check(NVRTC.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"backprop.cu", 0, None, None),
          "nvrtcCreateProgram")
    opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    rc = NVRTC.nvrtcCompileProgram(prog, len(options), opts)
    size = ctypes.c_size_t()
    NVRTC.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    NVRTC.nvrtcGetProgramLog(prog, log)
    cubin_size = ctypes.c_size_t()
    if rc == 0:
        NVRTC.nvrtcGetCUBINSize(prog, ctypes.byref(cubin_size))
    NVRTC.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, log.value.decode(errors="replace"), cubin_size.value


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_module_compiles_with_nvrtc(arch):
    source = module_source()
    rc, log, cubin = compile_program(source, list(NVRTC_OPTIONS) + [f"--gpu-architecture={arch}"])
    assert rc == 0, f"NVRTC ({NVRTC_PATH}) failed:\n{log}"
    assert "warning" not in log.lower(), log
    assert cubin > 0


def test_every_launched_kernel_is_in_the_program():
    """The kernel names cuda_backend.py builds all exist as extern "C" entry points."""
    source = module_source()
    declared = set(re.findall(r"\b(\w+)_##SUFFIX\s*\(", source))
    gemm = {f"gemm_{c}_{o}" for c in "LMS" for o in ("nn", "tn", "nt", "tt")}
    launched = {"activation_forward", "activation_backward", "dropout", "colsum", "weight_penalty",
                "loss_pointwise", "softmax_cross_entropy", "sgd_update", "adam_update",
                "train_batch_in", "train_step_end"}
    assert launched <= declared
    assert "BP_GEMM_CONFIGS(f32, float)" in source and "BP_GEMM_CONFIGS(f64, double)" in source
    assert len(gemm) == 12
