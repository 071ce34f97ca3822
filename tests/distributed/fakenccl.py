"""A stand-in for ``cupy.cuda.nccl`` under the cuda emulator (tests only): the communicator's
allReduce sums the emulator's "device" buffers (host memory at the given pointers) with MPI.
It lets the tests run backprop.distributed's NCCL code path (unique id from rank 0, one
communicator, allReduce on device pointers with NCCL's datatype codes) without a GPU."""

import ctypes
import sys

import numpy as np

NCCL_FLOAT32, NCCL_FLOAT64 = 7, 8
NCCL_SUM = 0
calls = {"allReduce": 0}


def get_unique_id():
    return tuple(range(128))  # NCCL's id is 128 bytes, sent from rank 0 to the others


class NcclCommunicator:
    def __init__(self, ndev, commId, rank):
        from mpi4py import MPI
        self.comm = MPI.COMM_WORLD
        if ndev != self.comm.Get_size() or rank != self.comm.Get_rank():
            raise RuntimeError(f"NcclCommunicator({ndev}, id, {rank}) on rank "
                               f"{self.comm.Get_rank()} of {self.comm.Get_size()}")
        if commId != get_unique_id():
            raise RuntimeError("NcclCommunicator: the unique id did not come from rank 0")

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):
        from mpi4py import MPI
        if op != NCCL_SUM:
            raise RuntimeError(f"op {op}")
        ctype = {NCCL_FLOAT32: ctypes.c_float, NCCL_FLOAT64: ctypes.c_double}[datatype]
        send = np.ctypeslib.as_array((ctype * count).from_address(sendbuf))
        recv = np.ctypeslib.as_array((ctype * count).from_address(recvbuf))
        self.comm.Allreduce(send.copy(), recv, op=MPI.SUM)
        calls["allReduce"] += 1


def install():
    """``from cupy.cuda import nccl`` gives this module (``cupy`` must be the fake CuPy)."""
    cupy = sys.modules["cupy"]
    cupy.cuda.nccl = sys.modules[__name__]
    sys.modules["cupy.cuda"] = cupy.cuda
    sys.modules["cupy.cuda.nccl"] = sys.modules[__name__]
