"""The busy-wait trap, measured: cpu-backend training steps right after a numpy product.

After a multi-threaded numpy/OpenBLAS call, OpenBLAS's worker threads busy-wait for ~0.1 s. A
second pool of threads that needs those cores next (another OpenBLAS, an OpenMP team) then waits
for time slices. This script alternates a numpy 512x512 product with one training step of the
"small" configuration [64,128,128,10] (batch 256) and prints the median step time alone and right
after the numpy product, for each way the cpu backend can do its large products:

    numpy   numpy's own OpenBLAS (the default: one thread pool shared with numpy)
    wheel   the scipy-openblas32 wheel's OpenBLAS (a second pool)
    eigen   Eigen's product on the calling thread only

Run:  python benchmarks/cpu_stall.py            (each choice in a fresh interpreter)
"""

import os
import statistics
import subprocess
import sys
import time


def measure(rounds=40):
    import numpy as np

    import backprop as bp
    from backprop.backends import cpu_backend

    net = bp.MLP([64, 128, 128, 10], backend="cpu", seed=0)
    trainer = bp.Trainer(net, "mse", "sgd")
    rng = np.random.default_rng(0)
    X = net.input_array(rng.normal(size=(256, 64)))
    Y = net.target_array(rng.normal(size=(256, 10)), 256, "mse")
    M = rng.normal(size=(512, 512)).astype(np.float32)
    for _ in range(20):
        trainer.step(X, Y)
    alone, after = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        trainer.step(X, Y)
        alone.append(time.perf_counter() - start)
        M @ M
        start = time.perf_counter()
        trainer.step(X, Y)
        after.append(time.perf_counter() - start)
    a, b = statistics.median(alone) * 1e6, statistics.median(after) * 1e6
    blas = os.path.basename(cpu_backend.BLAS_PATH) or "(none: Eigen)"
    print(f"{os.environ.get('BACKPROP_CPU_BLAS', 'default'):8s} {blas:36s} step alone {a:8.0f} us   "
          f"right after numpy {b:8.0f} us   ratio {b / a:5.1f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        measure()
    else:
        for choice in ("numpy", "wheel", "eigen"):
            env = dict(os.environ, BACKPROP_CPU_BLAS=choice)
            subprocess.run([sys.executable, __file__, "--child"], env=env, check=True)
