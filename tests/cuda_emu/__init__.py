"""CPU emulation of the cuda backend's kernels (tests only, not part of the package).

``emulator`` compiles cuda/*.cu with g++ and ``cuda_emu.h`` into a shared library and launches
its kernels; ``fakecupy`` is the small part of CuPy the cuda backend uses, on top of it.
"""
