"""Compiles the CUDA sources with the host compiler and launches their kernels on the CPU.

    lib = load()                       # cuda/*.cu + cuda_emu.h -> a shared library (cached)
    lib.launch("gemm_S_nn_f32", grid, block, args)   # args: numpy arrays and numpy scalars

The kernel names are read from the preprocessed sources (``extern "C" void name(``); for each a
generated launcher unpacks CUDA's ``void** args`` into the kernel's parameters, and a generated
signature string ("Pf,Pf,i,...") lets ``launch`` check that every argument has the type the
kernel expects, which CuPy itself does not check.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CUDA_DIR = HERE.parent.parent / "cuda"
HEADER = HERE / "cuda_emu.h"
CXX = os.environ.get("CXX", "g++")

# signature code -> (numpy dtype or None for pointers, ctypes type)
_SCALARS = {"f": (np.float32, ctypes.c_float), "d": (np.float64, ctypes.c_double),
            "i": (np.int32, ctypes.c_int32), "I": (np.uint32, ctypes.c_uint32),
            "q": (np.int64, ctypes.c_int64)}
_POINTEES = {"Pf": np.float32, "Pd": np.float64, "Pi": np.int32, "PI": np.uint32, "Pq": np.int64}

_lock = threading.Lock()
_libs: dict = {}


class EmulationError(RuntimeError):
    """A kernel was launched wrongly (types, geometry) or misused a barrier."""


def sources(cuda_dir=CUDA_DIR):
    return sorted(Path(cuda_dir).glob("*.cu"))


def cache_dir():
    d = Path(os.environ.get("BACKPROP_CUDA_EMU_CACHE", Path(tempfile.gettempdir()) / "backprop-cuda-emu"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def kernel_names(files, include_dir):
    """The extern "C" kernels of the sources, read from the preprocessed text."""
    names = []
    for src in files:
        text = subprocess.run([CXX, "-x", "c++", "-std=c++17", "-E", "-P", f"-I{include_dir}",
                               "-include", str(HEADER), str(src)],
                              check=True, capture_output=True, text=True).stdout
        names += re.findall(r'extern "C"\s+void\s+(\w+)\s*\(', text)
    return names


def build(files=None, include_dir=CUDA_DIR, opt="-O1"):
    """Path of the shared library for the given sources (default cuda/*.cu), rebuilt when any
    source, the header or this file changes."""
    files = [Path(f) for f in (files if files is not None else sources(include_dir))]
    include_dir = Path(include_dir)
    digest = hashlib.sha256()
    for path in files + sorted(include_dir.glob("*.cuh")) + [HEADER, Path(__file__)]:
        digest.update(path.name.encode() + path.read_bytes())
    digest.update(opt.encode() + CXX.encode())
    lib = cache_dir() / f"kernels-{digest.hexdigest()[:16]}.so"
    if lib.exists():
        return lib
    names = kernel_names(files, include_dir)
    unit = [f'#include "{HEADER}"'] + [f'#include "{src}"' for src in files]
    for name in names:
        unit.append(f'extern "C" int emu_launch_{name}(const unsigned* g, void** a) '
                    f'{{ return cuda_emu::run({name}, g, a); }}')
        unit.append(f'extern "C" const char* emu_signature_{name}() '
                    f'{{ static std::string s = cuda_emu::signature({name}); return s.c_str(); }}')
    unit.append('extern "C" const char* emu_kernels() { return "' + " ".join(names) + '"; }')
    with tempfile.TemporaryDirectory() as tmp:
        cpp = Path(tmp) / "kernels_emu.cpp"
        cpp.write_text("\n".join(unit) + "\n")
        out = Path(tmp) / lib.name
        cmd = [CXX, "-std=c++17", opt, "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror",
               "-Wno-unused-parameter", "-Wno-unknown-pragmas", f"-I{include_dir}", str(cpp),
               "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise EmulationError(f"emulated build failed: {' '.join(cmd)}\n{proc.stderr}")
        shutil.move(str(out), lib)
    return lib


def build_code(code):
    """The shared library for one program given as text (what RawModule hands to NVRTC)."""
    digest = hashlib.sha256(code.encode()).hexdigest()[:16]
    src = cache_dir() / f"module-{digest}.cu"
    if not src.exists():
        src.write_text(code)
    return build([src], include_dir=src.parent)


class Library:
    """The compiled kernels; ``launch`` runs one with checked arguments."""

    def __init__(self, path):
        self.path = Path(path)
        self._dll = ctypes.CDLL(str(path))
        self._dll.cuda_emu_error.restype = ctypes.c_char_p
        self._dll.emu_kernels.restype = ctypes.c_char_p
        self.names = self._dll.emu_kernels().decode().split()
        self._kernels = {}
        self.launches = 0

    def kernel(self, name):
        if name not in self._kernels:
            if name not in self.names:
                raise AttributeError(f"no kernel named {name!r} in {self.path.name}")
            launch = getattr(self._dll, f"emu_launch_{name}")
            launch.restype = ctypes.c_int
            launch.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_void_p)]
            sig = getattr(self._dll, f"emu_signature_{name}")
            sig.restype = ctypes.c_char_p
            self._kernels[name] = (launch, sig().decode().rstrip(",").split(","))
        return self._kernels[name]

    def launch(self, name, grid, block, args):
        """Runs kernel ``name``; ``args`` are (pointer, dtype) pairs for arrays (pointer 0 for
        a null pointer, dtype None) or numpy scalars."""
        launch, signature = self.kernel(name)
        args = list(args)
        if len(args) != len(signature):
            raise EmulationError(f"{name}: {len(args)} arguments given, the kernel takes {len(signature)}")
        keep, ptrs = [], []
        for i, (arg, code) in enumerate(zip(args, signature)):
            if code.startswith("P"):
                if isinstance(arg, np.uint64):  # a raw address (0: the null pointer)
                    arg = (int(arg), None)
                if not isinstance(arg, tuple):
                    raise EmulationError(f"{name}: argument {i} must be an array (kernel type {code}); "
                                         f"got {type(arg).__name__}")
                address, dtype = arg
                if dtype is not None and np.dtype(dtype) != np.dtype(_POINTEES[code]):
                    raise EmulationError(f"{name}: argument {i} is an array of {np.dtype(dtype)}, "
                                         f"the kernel takes {np.dtype(_POINTEES[code])}*")
                value = ctypes.c_void_p(address)
            else:
                want, ctype = _SCALARS[code]
                if not isinstance(arg, np.generic) or arg.dtype != np.dtype(want):
                    raise EmulationError(f"{name}: argument {i} must be a numpy {np.dtype(want)} "
                                         f"scalar; got {arg!r} ({type(arg).__name__})")
                value = ctype(arg.item())
            keep.append(value)
            ptrs.append(ctypes.cast(ctypes.pointer(value), ctypes.c_void_p))
        geometry = (ctypes.c_uint * 6)(*_dim3(grid), *_dim3(block))
        argv = (ctypes.c_void_p * max(len(ptrs), 1))(*[p.value for p in ptrs])
        with _lock:
            rc = launch(geometry, argv)
        self.launches += 1
        if rc != 0:
            raise EmulationError(f"{name}: {self._dll.cuda_emu_error().decode()}")


def _dim3(d):
    d = tuple(int(x) for x in (d if isinstance(d, tuple) else (d,)))
    if not 1 <= len(d) <= 3:
        raise EmulationError(f"a launch dimension must have 1 to 3 entries; got {d}")
    return d + (1,) * (3 - len(d))


def load(code=None):
    """The emulated kernels of cuda/*.cu (or of the program ``code``), built once and cached."""
    with _lock:
        if code not in _libs:
            try:
                _libs[code] = Library(build() if code is None else build_code(code))
            except EmulationError as exc:
                _libs[code] = exc  # a failed build fails every later load at once
        if isinstance(_libs[code], Exception):
            raise _libs[code]
        return _libs[code]
