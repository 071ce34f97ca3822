"""The cuda backend: the kernels of cuda/*.cu, compiled at run time by CuPy RawModule (NVRTC).

Arrays of this backend are CuPy arrays in device memory; weights, optimizer state and activation
buffers stay there between steps. The package keeps each job in its own module:

    program.py   the sources, the kernel names, NVRTC options, the RawModule (and CuPy's disk cache)
    launch.py    launching a kernel, counting launches, CudaKernelError, BACKPROP_CUDA_SYNC
    kernels.py   CudaBackend: the Backend protocol's ``_<kernel>`` methods over those kernels
    graph.py     CUDA graph capture and the graph mode the captured kernels run in
    trainer.py   GraphTrainer: the frontend's training step captured as one graph per batch size
"""

from .graph import Graph, GraphContext
from .kernels import CudaBackend
from .launch import CudaKernelError
from .program import (GEMM_CONFIGS, NVRTC_OPTIONS, gemm_kernel_name, kernel_name,
                      launchable_kernels, module_source, sources_dir)
from .trainer import GraphTrainer

__all__ = ["GEMM_CONFIGS", "NVRTC_OPTIONS", "CudaBackend", "CudaKernelError", "Graph",
           "GraphContext", "GraphTrainer", "gemm_kernel_name", "kernel_name",
           "launchable_kernels", "module_source", "sources_dir"]
