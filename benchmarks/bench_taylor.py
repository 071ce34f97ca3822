"""taylor_forward + taylor_backward on numpy and cpu: best of N rounds, the backends alternating.

    python benchmarks/bench_taylor.py [--n 10000] [--rounds 5]

The network [2]+[20]*8+[1] tanh (identity output), first=(0, 1), second=((0, 0),): the shape of a
physics-informed network's residual (u, u_x, u_t, u_xx). Prints µs per forward+backward.
"""

import argparse
import time

import numpy as np

from backprop.backends import get_backend


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
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"[2]+[20]*8+[1] tanh, n = {args.n}, first=(0,1), second=((0,0),); "
          f"best of {args.rounds}, µs per taylor_forward + taylor_backward")
    print(f"{'dtype':8} {'numpy':>12} {'cpu':>12} {'speedup':>8}")
    for dtype in ("float32", "float64"):
        p = problem(args.n, dtype)
        best = {"numpy": np.inf, "cpu": np.inf}
        for b in best:  # warm up
            once(get_backend(b), *p)
        for _ in range(args.rounds):
            for b in best:
                best[b] = min(best[b], once(get_backend(b), *p))
        print(f"{dtype:8} {best['numpy'] * 1e6:12,.0f} {best['cpu'] * 1e6:12,.0f} "
              f"{best['numpy'] / best['cpu']:7.1f}x")


if __name__ == "__main__":
    main()
