"""The program the cuda backend hands to CuPy's RawModule, compiled by NVRTC itself (the runtime
compiler, which needs no GPU) with the backend's options, for sm_80 and sm_90, without warnings;
every kernel the backend can launch is in the compiled cubin (test_cuda_emulated.py checks the
converse, that every extern "C" kernel of cuda/*.cu is one the adapter launches).

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

from backprop.backends.cuda import NVRTC_OPTIONS, launchable_kernels, module_source


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


def load_builtins(nvrtc, path):
    """Loads the libnvrtc-builtins of libnvrtc's own version from its folder (libnvrtc opens it
    at compile time, by name); None when loaded, else why not. A wheel of another version
    installed over the first (``pip install torch`` brings its own nvidia-cuda-nvrtc) leaves a
    libnvrtc whose builtins cannot be found."""
    major, minor = ctypes.c_int(), ctypes.c_int()
    if nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)) != 0:
        return f"nvrtcVersion failed for {path}"
    name = f"libnvrtc-builtins.so.{major.value}.{minor.value}"
    beside = os.path.join(os.path.dirname(path), name)
    try:
        ctypes.CDLL(beside if os.path.exists(beside) else name, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        return (f"libnvrtc {major.value}.{minor.value} ({path}) cannot load {name} ({exc}): "
                "mismatched NVRTC wheels (pip install --force-reinstall nvidia-cuda-nvrtc)")
    return None


NVRTC, NVRTC_PATH = find_nvrtc()
pytestmark = pytest.mark.skipif(NVRTC is None, reason="NVRTC (libnvrtc) is not installed here "
                                "(pip install nvidia-cuda-nvrtc, or a CUDA toolkit)")
BUILTINS_MISSING = None if NVRTC is None else load_builtins(NVRTC, NVRTC_PATH)


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
    cubin = b""
    if rc == 0:
        NVRTC.nvrtcGetCUBINSize(prog, ctypes.byref(cubin_size))
        buf = ctypes.create_string_buffer(cubin_size.value)
        NVRTC.nvrtcGetCUBIN(prog, buf)
        cubin = buf.raw
    NVRTC.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, log.value.decode(errors="replace"), cubin


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_module_compiles_with_nvrtc(arch):
    """The program compiles without warnings, and every kernel name the adapter can launch
    (backends/cuda/program.py builds them all) is an entry point of the compiled cubin."""
    if BUILTINS_MISSING:
        pytest.skip(BUILTINS_MISSING)
    source = module_source()
    rc, log, cubin = compile_program(source, list(NVRTC_OPTIONS) + [f"--gpu-architecture={arch}"])
    assert rc == 0, f"NVRTC ({NVRTC_PATH}) failed:\n{log}"
    assert "warning" not in log.lower(), log
    assert cubin
    symbols = set(re.findall(rb"[A-Za-z_][A-Za-z0-9_]*", cubin))
    missing = [name for name in launchable_kernels() if name.encode() not in symbols]
    assert not missing, f"kernels the adapter launches but the program lacks: {missing}"
