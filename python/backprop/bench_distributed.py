"""``backprop bench --distributed``: data-parallel steps per second and the allreduce's share.

Under ``mpiexec -n P backprop bench --distributed``: every rank holds batch/P rows of a bench
configuration's global batch (bench.CONFIGS), runs distributed steps (kernel path, one Allreduce
per step) and reports steps per second, the share of the step spent in the Allreduce, and the
Allreduce's measured latency and bandwidth on this communicator; from those, the predicted
allreduce time and step rate at 8, 64 and 512 ranks under the ring-allreduce model

    t_allreduce(P) = 2 (P-1)/P · bytes / bandwidth + 2 (P-1) · latency

with the compute time of a step scaled as the per-rank batch (batch/P) for the same global batch
(strong scaling), or kept constant for a constant per-rank batch (weak scaling). Run without
mpiexec it times one process on the whole batch (the fused path where the backend has one), the
single-process row to compare with.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from . import bench
from .model import MLP
from .optim import SGD
from .train import Trainer


def _comm():
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI.COMM_WORLD


def measure_allreduce(comm, nbytes, dtype=np.float32, repeat=20):
    """Median seconds of an Allreduce of 8 bytes (latency) and of ``nbytes`` (bandwidth:
    the model's 2 (P-1)/P · bytes / t)."""
    from mpi4py import MPI
    P = comm.Get_size()
    out = {}
    for label, size in (("small", 8), ("large", nbytes)):
        a = np.ones(max(1, size // np.dtype(dtype).itemsize), dtype)
        b = np.empty_like(a)
        times = []
        for _ in range(repeat):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(a, b, op=MPI.SUM)
            times.append(time.perf_counter() - t0)
        out[label] = statistics.median(times)
    latency = out["small"] / (2 * max(P - 1, 1))
    bandwidth = 2 * (P - 1) / P * nbytes / max(out["large"] - 2 * (P - 1) * latency, 1e-12)
    return {"latency_s": latency, "bandwidth_Bps": bandwidth, "t_small_s": out["small"],
            "t_large_s": out["large"], "bytes": nbytes}


def ring_time(P, nbytes, latency, bandwidth):
    return 2 * (P - 1) / P * nbytes / bandwidth + 2 * (P - 1) * latency


def run(configs=("mnist", "wide"), backend="cpu", dtype="float32", steps=10, repeat=3,
        comm=None):
    comm = _comm() if comm is None else comm
    P = 1 if comm is None else comm.Get_size()
    rank = 0 if comm is None else comm.Get_rank()
    rows = []
    for name in configs:
        config = bench.CONFIGS[name]
        X, Y = bench.make_data(config)
        net = MLP(config.layers, activation=config.activation, backend=backend, dtype=dtype,
                  seed=0)
        if P > 1:
            trainer = Trainer(net, config.loss, SGD(lr=bench.LR), comm=comm)
            lo, hi = config.batch * rank // P, config.batch * (rank + 1) // P
            Xd, Yd = net.input_array(X[lo:hi]), net.target_array(Y[lo:hi], hi - lo, config.loss)
        else:
            trainer = Trainer(net, config.loss, SGD(lr=bench.LR))
            Xd, Yd = net.input_array(X), net.target_array(Y, config.batch, config.loss)
        trainer.step(Xd, Yd)  # warm up (and the distributed start)
        rates, shares, waits = [], [], []
        for _ in range(repeat):
            if P > 1:
                comm.Barrier()
                trainer.dist.reduce_seconds = 0.0
            t0 = time.perf_counter()
            for _ in range(steps):
                trainer.step(Xd, Yd)
            net.backend.synchronize()
            seconds = time.perf_counter() - t0
            if P > 1:  # the slowest rank sets the pace
                seconds = comm.allreduce(seconds, op=_max())
                # min over ranks: the rank that arrives last waits least, so its time in the
                # Allreduce is the transfer; max over ranks adds the wait for the slower rank
                shares.append(comm.allreduce(trainer.dist.reduce_seconds, op=_min()) / seconds)
                waits.append(comm.allreduce(trainer.dist.reduce_seconds, op=_max()) / seconds)
            rates.append(steps / seconds)
        row = {"config": name, "ranks": P, "batch": config.batch, "steps_per_s": statistics.median(rates),
               "allreduce_share": statistics.median(shares) if shares else 0.0,
               "allreduce_share_with_wait": statistics.median(waits) if waits else 0.0,
               "grad_bytes": (sum(int(p.size) for p in net.params) + 1) * np.dtype(dtype).itemsize}
        if P > 1:
            row["allreduce"] = measure_allreduce(comm, row["grad_bytes"], np.dtype(dtype))
        rows.append(row)
    return rows


def _max():
    from mpi4py import MPI
    return MPI.MAX


def _min():
    from mpi4py import MPI
    return MPI.MIN


def format_rows(rows):
    lines = []
    for row in rows:
        line = (f"{row['config']:6s} ranks={row['ranks']} global batch={row['batch']}: "
                f"{row['steps_per_s']:.2f} steps/s")
        if row["ranks"] > 1:
            a = row["allreduce"]
            line += (f", allreduce {100 * row['allreduce_share']:.1f}% of the step ("
                     f"{100 * row['allreduce_share_with_wait']:.1f}% with the wait for the other "
                     f"rank); Allreduce of "
                     f"{row['grad_bytes'] / 1e6:.2f} MB: {a['t_large_s'] * 1e3:.2f} ms, 8 B: "
                     f"{a['t_small_s'] * 1e6:.1f} us -> latency {a['latency_s'] * 1e6:.1f} us, "
                     f"bandwidth {a['bandwidth_Bps'] / 1e9:.2f} GB/s")
            lines.append(line)
            step = 1 / row["steps_per_s"]
            compute = step * (1 - row["allreduce_share"])
            for P in (8, 64, 512):
                t = ring_time(P, row["grad_bytes"], a["latency_s"], a["bandwidth_Bps"])
                strong = compute * row["ranks"] / P + t
                lines.append(f"    predicted P={P}: allreduce {t * 1e3:.2f} ms; strong scaling "
                             f"(global batch {row['batch']}): {1 / strong:.1f} steps/s; weak "
                             f"scaling (batch {row['batch'] // row['ranks']} per rank): "
                             f"{1 / (compute + t):.1f} steps/s")
            continue
        lines.append(line)
    return "\n".join(lines)


def main(configs=("mnist", "wide"), backend="cpu", dtype="float32", steps=10, repeat=3):
    comm = _comm()
    rows = run(configs, backend, dtype, steps, repeat, comm)
    if comm is None or comm.Get_rank() == 0:
        print(format_rows(rows), flush=True)
    return 0
