"""Launching the cuda backend's kernels and mapping their errors.

``Launcher.launch(name, grid, block, args)`` looks the kernel up in the compiled ``Program`` and
launches it on the current stream; any failure (a missing kernel, a bad argument, a CUDA error)
becomes ``CudaKernelError`` naming the kernel and its geometry. With BACKPROP_CUDA_SYNC=1 every
launch outside a graph capture is also waited for, so an error of the run itself is attributed
to the kernel that caused it rather than to a later call.

Scalars go to the kernels as numpy scalars of the exact C type (np.int32 for int, np.int64 for
long long, np.float32/np.float64 for T and double), because CuPy passes a scalar by its own type
without looking at the kernel's signature.

``launches`` counts what the host submits: kernel launches, graph launches (one each, however
many kernels the graph holds), the memsets that reset the reductions' counter, and the graph trainer's host<->device copies of its control block;
the benchmark reports it per training step.
"""

from __future__ import annotations

import os

import numpy as np

NULL = np.uint64(0)  # a null pointer argument


class CudaKernelError(RuntimeError):
    """A CUDA kernel failed to compile, launch or run; the message names the kernel."""


def blocks(n, per_block):
    return (int(n) + per_block - 1) // per_block


class Launcher:
    """Launches, host<->device copies and their counts for one backend."""

    def __init__(self, cp, program):
        self.cp, self.program = cp, program
        self.sync_each_launch = os.environ.get("BACKPROP_CUDA_SYNC", "") == "1"
        self.capturing = False   # a stream is capturing a graph: no allocations, no syncs
        self.launches = 0
        self.graph_launches = 0  # replays of captured graphs (each also counts in launches)
        self.copies = 0          # host<->device copies of the graph trainer (also in launches)

    def synchronize(self):
        self.cp.cuda.get_current_stream().synchronize()

    def launch(self, name, grid, block, args):
        fn = self.program.function(name)
        try:
            fn(grid, block, args)
            if self.sync_each_launch and not self.capturing:
                self.synchronize()
        except Exception as exc:
            raise CudaKernelError(f"cuda kernel {name!r} (grid {grid}, block {block}) failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
        self.launches += 1

    def upload(self, dst, host):
        """dst (a contiguous device array) = host: one host-to-device copy, counted."""
        dst.set(np.ascontiguousarray(host, dtype=dst.dtype))
        self.copies += 1
        self.launches += 1

    def download(self, src):
        """A host copy of src: one device-to-host copy (it waits for the work before it)."""
        out = src.get()
        self.copies += 1
        self.launches += 1
        return out
