"""Two builds of the cpu module compared call by call: the installed one (A) and another (B).

    pip install --no-build-isolation --no-deps --target /tmp/b .     # build B from a changed tree
    python benchmarks/ab_taylor.py /tmp/b/backprop/_cpu.*.so [--calls 400] [--dtype float32] [--threads N]

Both modules run taylor_forward and taylor_backward on the same arguments: those of one Adam step
of the Burgers loss at N_f = 10,000 (bench_pinn's network and points), on the installed backend's
thread count (or --threads for both). The two alternate call by call, A first on even calls and B first on odd
ones, and each call's time is divided by the other build's time of the same call: the median of
those ratios is printed (below 1: A is faster), with each build's fastest tenth.

Why paired ratios. On a shared machine the same call takes 30-60% longer in some minutes than in
others. Medians or best times of two builds measured one after the other follow those minutes;
and even best-of-N of two variants measured in one process can mislead (a change judged 5%
faster that way was 5-8% slower call by call, RESULTS.md). A ratio of two calls a few
milliseconds apart sees the same minute.
"""

import argparse
import importlib.util
import time

import numpy as np

from backprop import _cpu, pinn
from backprop.bench_pinn import _Backprop


def load(path):
    """The module in ``path`` (a build of backprop._cpu) under another package name."""
    spec = importlib.util.spec_from_file_location("ab_other._cpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kernel_arguments(dtype, n_f=10000, seed=0):
    """The arguments of the two native calls in one trainer step (recorded on the way through)."""
    seen = {}
    names = ("taylor_forward", "taylor_backward")
    original = {name: getattr(_cpu, name) for name in names}

    def recorder(name):
        def call(*args):
            seen[name] = args
            return original[name](*args)
        return call

    for name in names:
        setattr(_cpu, name, recorder(name))
    try:
        _Backprop(pinn.Burgers(n_f=n_f, seed=seed), "cpu", dtype, False, seed).run(2)
    finally:
        for name in names:
            setattr(_cpu, name, original[name])
    return seen["taylor_forward"], seen["taylor_backward"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", help="path of the other build's _cpu extension module")
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, default=None, help="for both builds (default: the backend's)")
    args = parser.parse_args()
    forward_args, backward_args = kernel_arguments(args.dtype)  # (sets up the cpu backend)
    other = load(args.other)
    if args.threads is not None:
        _cpu.set_num_threads(args.threads)
    other.set_num_threads(_cpu.get_num_threads())
    builds = {"A": _cpu, "B": other}
    times = {"A": [], "B": []}
    for call in range(20 + args.calls):
        for name in ("A", "B") if call % 2 == 0 else ("B", "A"):
            module = builds[name]
            t0 = time.perf_counter()
            module.taylor_forward(*forward_args)
            t1 = time.perf_counter()
            module.taylor_backward(*backward_args)
            t2 = time.perf_counter()
            if call >= 20:  # the first calls warm both builds up
                times[name].append((t1 - t0, t2 - t1))
    a, b = np.array(times["A"]), np.array(times["B"])
    print(f"threads {_cpu.get_num_threads()}, {args.dtype}, {args.calls} calls each")
    print(f"A / B, median of the paired ratios: forward {np.median(a[:, 0] / b[:, 0]):.4f}  "
          f"backward {np.median(a[:, 1] / b[:, 1]):.4f}  "
          f"forward + backward {np.median(a.sum(1) / b.sum(1)):.4f}")
    print(f"fastest tenth, forward + backward: A {1e3 * np.percentile(a.sum(1), 10):.3f} ms  "
          f"B {1e3 * np.percentile(b.sum(1), 10):.3f} ms")


if __name__ == "__main__":
    main()
