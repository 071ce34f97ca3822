"""Moving a backend's flat arrays between MPI ranks: Allreduce and Allgatherv through mpi4py
(host arrays, or CuPy arrays with a CUDA-aware MPI), NCCL, or a copy through host memory; and
``LocalComm``, the communicator of one process."""

from __future__ import annotations

import numpy as np


class LocalComm:
    """The one-process stand-in for an MPI communicator (``fit(..., grad_blocks=B)`` without MPI)."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def allgather(self, obj):
        return [obj]

    def Bcast(self, buf, root=0):
        pass


def mpi_dtype(dtype):
    from mpi4py import MPI
    return {np.dtype(np.float32): MPI.FLOAT, np.dtype(np.float64): MPI.DOUBLE}[np.dtype(dtype)]


class Transport:
    """Allreduce/Allgatherv of flat arrays of one backend: host arrays through mpi4py's buffer
    interface; CuPy arrays through CUDA-aware MPI (``__cuda_array_interface__``), NCCL
    (``cupy.cuda.nccl``, Allreduce only) or a copy through host memory."""

    def __init__(self, comm, xp, dtype, kind="auto"):
        self.comm, self.xp, self.dtype = comm, xp, np.dtype(dtype)
        self.kind = "mpi"
        self.nccl = None
        if xp is not np:
            self.kind = kind if kind != "auto" else self._pick()
            if self.kind == "nccl":
                self.nccl = self._nccl_comm()

    def _pick(self):
        if isinstance(self.comm, LocalComm):
            return "mpi"
        try:
            from cupy.cuda import nccl  # noqa: F401
            return "nccl"
        except Exception:
            pass
        try:
            from mpi4py import MPI
            if MPI.Query_cuda_support():
                return "mpi"
        except Exception:
            pass
        return "host"

    def _nccl_comm(self):
        from cupy.cuda import nccl
        uid = nccl.get_unique_id() if self.comm.Get_rank() == 0 else None
        uid = self.comm.bcast(uid, root=0)
        return nccl.NcclCommunicator(self.comm.Get_size(), uid, self.comm.Get_rank())

    def _sync(self):
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()

    def allreduce(self, send, recv):
        if isinstance(self.comm, LocalComm):
            recv[...] = send
            return
        from mpi4py import MPI
        if self.kind == "nccl":
            from cupy.cuda import nccl
            code = nccl.NCCL_FLOAT64 if self.dtype == np.float64 else nccl.NCCL_FLOAT32
            stream = self.xp.cuda.get_current_stream()
            self.nccl.allReduce(send.data.ptr, recv.data.ptr, send.size, code, nccl.NCCL_SUM,
                                stream.ptr)
            return
        if self.kind == "host":
            self._sync()
            host = self.xp.asnumpy(send)
            out = np.empty_like(host)
            self.comm.Allreduce([host, mpi_dtype(self.dtype)], [out, mpi_dtype(self.dtype)],
                                op=MPI.SUM)
            recv.set(out)
            return
        self._sync()
        self.comm.Allreduce([send, mpi_dtype(self.dtype)], [recv, mpi_dtype(self.dtype)],
                            op=MPI.SUM)

    def allgatherv(self, send, recv, counts):
        if isinstance(self.comm, LocalComm):
            recv[: send.size] = send
            return
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
        mpitype = mpi_dtype(self.dtype)
        if self.xp is not np and self.kind != "mpi":  # through host memory
            self._sync()
            host, out = self.xp.asnumpy(send), np.empty(recv.size, self.dtype)
            self.comm.Allgatherv([host, mpitype], [out, (list(counts), displs), mpitype])
            recv.set(out)
            return
        self._sync()
        self.comm.Allgatherv([send, mpitype], [recv, (list(counts), displs), mpitype])
