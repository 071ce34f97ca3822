"""The cuda backend's matrix product against cuBLAS (cupy.matmul) and PyTorch on the same GPU.

    python benchmarks/bench_gemm_cuda.py                 # 4096^3 float32 and a few other sizes
    python benchmarks/bench_gemm_cuda.py --sizes 4096,1024x512x2048 --dtype float64

TF32 tensor cores are switched off for the cuBLAS and PyTorch rows (CUPY_TF32=0,
torch.backends.cuda.matmul.allow_tf32 = False): every row is plain FP32 (or FP64) arithmetic.
Each row is the median of --repeat timed runs (CUDA events), after a warm-up. Also prints the
kernel launches per training step of each `backprop bench` configuration, eager and as a graph.
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("CUPY_TF32", "0")

import numpy as np  # noqa: E402


def timed(cupy, fn, repeat):
    fn()
    cupy.cuda.get_current_stream().synchronize()
    times = []
    for _ in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return statistics.median(times)


def parse_size(text):
    parts = [int(p) for p in text.lower().split("x")]
    return tuple(parts * 3) if len(parts) == 1 else tuple(parts)


def gemm_rows(sizes, dtype, repeat):
    import cupy

    from backprop.backends import get_backend
    bk = get_backend("cuda")
    try:
        import torch
        torch.backends.cuda.matmul.allow_tf32 = False
    except ImportError:
        torch = None
    print(f"device: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}, dtype {dtype}")
    print(f"{'m x k x n':>18} {'ops':>4} {'cfg':>4} {'ours TFLOP/s':>13} {'cuBLAS':>8} {'ours/cuBLAS':>12} {'torch':>8}")
    rng = np.random.default_rng(0)
    for m, k, n in sizes:
        for ops in ("nn", "tn", "nt"):
            ta, tb = ops[0] == "t", ops[1] == "t"
            A = cupy.asarray(rng.standard_normal((k, m) if ta else (m, k)), dtype=dtype)
            B = cupy.asarray(rng.standard_normal((n, k) if tb else (k, n)), dtype=dtype)
            C = cupy.empty((m, n), dtype)
            flops = 2.0 * m * n * k
            ours = timed(cupy, lambda: bk.gemm(A, B, out=C, trans_a=ta, trans_b=tb), repeat)
            opA, opB = (A.T if ta else A), (B.T if tb else B)
            cublas = timed(cupy, lambda: cupy.matmul(opA, opB, out=C), repeat)
            row = (f"{m:>5}x{k:>5}x{n:>5} {ops:>4} {bk.gemm_config(m, n):>4} {flops / ours / 1e12:>13.2f} "
                   f"{flops / cublas / 1e12:>8.2f} {cublas / ours:>12.1%}")
            if torch is not None:
                tA = torch.as_tensor(opA, device="cuda")
                tB = torch.as_tensor(opB, device="cuda")
                t = timed(cupy, lambda: torch.matmul(tA, tB), repeat)
                row += f" {flops / t / 1e12:>8.2f}"
            print(row)


def launch_counts():
    """Launches per training step (Trainer.step with SGD on a fixed batch, as `backprop bench`):
    the kernel-by-kernel path against the fused path (one CUDA graph replay per step)."""
    from backprop.backends import get_backend
    from backprop.bench import CONFIGS, make_data
    from backprop.model import MLP
    from backprop.optim import SGD
    from backprop.train import Trainer
    import cupy

    bk = get_backend("cuda")
    print(f"\n{'config':>8} {'eager launches':>15} {'graph launches':>15} {'eager us/step':>14} "
          f"{'graph us/step':>14} {'kernels in graph':>17}")
    for name, config in CONFIGS.items():
        X, Y = make_data(config)
        row = []
        for fused in (False, True):
            net = MLP(config.layers, activation=config.activation, backend="cuda", seed=0)
            trainer = Trainer(net, config.loss, SGD(lr=1e-4), fused=fused)
            Xb, Yb = net.input_array(X), net.target_array(Y, config.batch, config.loss)
            trainer.step(Xb, Yb)  # compiles, captures
            before = bk.launches
            trainer.step(Xb, Yb)
            row.append((bk.launches - before, timed(cupy, lambda: trainer.step(Xb, Yb), 50), trainer))
        kernels = max(g.graph.kernels for g in row[1][2].native()._graphs.values())
        print(f"{name:>8} {row[0][0]:>15} {row[1][0]:>15} {row[0][1] * 1e6:>14.1f} "
              f"{row[1][1] * 1e6:>14.1f} {kernels:>17}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4096,2048,1024,4096x1024x4096,2048x4096x1024,1000x1000x1000")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    gemm_rows([parse_size(s) for s in args.sizes.split(",")], np.dtype(args.dtype), args.repeat)
    launch_counts()


if __name__ == "__main__":
    main()
