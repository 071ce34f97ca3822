"""CPU emulation of the cuda backend's kernels (tests only, not part of the package).

``emulator`` compiles cuda/*.cu with g++ and ``cuda_emu.h`` into a shared library and launches
its kernels; ``fakecupy`` is the small part of CuPy the cuda backend uses, on top of it.
"""

import os
import sys


def install_if_requested():
    """With BACKPROP_TEST_CUDA_EMULATOR=1, ``import cupy`` gives ``fakecupy``: every test of the
    suite that runs on the "cuda" backend then runs the real kernels under emulation."""
    if os.environ.get("BACKPROP_TEST_CUDA_EMULATOR", "") != "1":
        return False
    from . import fakecupy
    sys.modules["cupy"] = fakecupy
    return True
