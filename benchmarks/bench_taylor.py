"""taylor_forward + taylor_backward on numpy and cpu: best of N rounds, the backends alternating.

    python benchmarks/bench_taylor.py [--n 10000] [--rounds 5] [--threads 1,2]

The network [2]+[20]*8+[1] tanh (identity output), first=(0, 1), second=((0, 0),): the shape of a
physics-informed network's residual (u, u_x, u_t, u_xx). Prints µs per forward+backward.
"""

import argparse
import time

import numpy as np

from backprop.backends import get_backend

SETTLE = 0.3  # seconds between rows (see RESULTS.md, the busy-wait trap)
WARM_UP = 0.2  # seconds of untimed calls before each timed one (bench_pinn.SETTLE_SECONDS says why)


def problem(n, dtype, layers=(2,) + (20,) * 8 + (1,), seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, layers[0])).astype(dtype)
    Ws = [(rng.normal(size=(p, q)) / np.sqrt(p)).astype(dtype) for p, q in zip(layers, layers[1:])]
    bs = [rng.normal(size=q).astype(dtype) for q in layers[1:]]
    acts = ["tanh"] * (len(layers) - 2) + ["identity"]
    G = rng.normal(size=(n, layers[-1])).astype(dtype)
    dG = rng.normal(size=(2, n, layers[-1])).astype(dtype)
    d2G = rng.normal(size=(1, n, layers[-1])).astype(dtype)
    return X, Ws, bs, acts, G, dG, d2G


def once(be, X, Ws, bs, acts, G, dG, d2G):
    t0 = time.perf_counter()
    _, _, _, saved = be.taylor_forward(X, Ws, bs, acts, (0, 1), ((0, 0),))
    be.taylor_backward(saved, Ws, acts, G, dG, d2G)
    return time.perf_counter() - t0


def main():
    import os

    import backprop as bp
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}",
                    help="the cpu backend's thread counts to time (default: 1 and the cores)")
    args = ap.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    print(f"[2]+[20]*8+[1] tanh, n = {args.n}, first=(0,1), second=((0,0),); "
          f"best of {args.rounds}, µs per taylor_forward + taylor_backward")
    names = ["numpy"] + [f"cpu {t} thr" for t in counts]
    print(f"{'dtype':8} " + " ".join(f"{n:>12}" for n in names) + "   numpy / cpu")
    before = bp.get_num_threads()
    try:
        for dtype in ("float32", "float64"):
            p = problem(args.n, dtype)
            best = {n: np.inf for n in names}
            for _ in range(args.rounds + 1):  # the first round warms up and is not counted
                for name in names:
                    if name != "numpy":
                        bp.set_num_threads(int(name.split()[1]))
                    time.sleep(SETTLE)  # OpenBLAS's threads stop spinning after the numpy row
                    be = get_backend(name.split()[0])
                    warm = time.perf_counter() + WARM_UP  # an idle core takes a while to speed up
                    while time.perf_counter() < warm:
                        once(be, *p)
                    t = once(be, *p)
                    if _ > 0:
                        best[name] = min(best[name], t)
            ratios = " ".join(f"{best['numpy'] / best[n]:5.1f}x" for n in names[1:])
            print(f"{dtype:8} " + " ".join(f"{best[n] * 1e6:12,.0f}" for n in names) + f"   {ratios}")
    finally:
        bp.set_num_threads(before)


if __name__ == "__main__":
    main()
