"""The command line: ``backprop bench``, ``backprop demo`` and ``backprop info``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from . import bench, demo
from .backends import BACKENDS, why_unavailable


def _names(text, valid, what):
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in valid:
            raise SystemExit(f"backprop: unknown {what} {name!r}; valid: {', '.join(valid)}")
    return names


def cmd_bench(args):
    configs = _names(args.configs, tuple(bench.CONFIGS), "configuration")
    backends = _names(args.backends, BACKENDS, "backend") if args.backends else None
    result = bench.run(configs=configs, backends=backends, dtype=args.dtype, repeat=args.repeat,
                       torch=args.torch, quick=args.quick, peak_gflops=args.peak)
    result["command"] = "backprop " + " ".join(shlex.quote(a) for a in args.argv)
    print(f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; "
          f"one training step (forward, backward, SGD update), median of {args.repeat if not args.quick else min(args.repeat, 3)} rounds")
    print(bench.format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def cmd_demo(args):
    if args.plot:
        demo.require_matplotlib()  # before training, not after
    backend = args.backend
    if backend == "auto":
        backend = "cpu" if why_unavailable("cpu") is None else "numpy"
    print(f"fitting x sin(4πx) with [1]+[10]*10+[1] tanh on backend {backend!r}: "
          f"{4 * args.steps} full-batch Adam steps (rates 1e-3, 1e-4, 1e-5, 1e-6)")
    result = demo.run(backend=backend, steps=args.steps, seed=args.seed, verbose=args.progress)
    print(f"relative L2 error on 1000 test points: {100 * result['error']:.3f}% "
          f"({result['steps']} steps in {result['seconds']:.1f} s, final loss {result['final_loss']:.3g})")
    if args.plot:
        demo.plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


def cmd_info(args):
    import numpy

    from . import __version__
    print(f"backprop {__version__}, numpy {numpy.__version__}")
    for name in BACKENDS:
        reason = why_unavailable(name)
        print(f"  {name:6s} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="backprop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bench", help="time one training step per backend per configuration")
    b.add_argument("--configs", default=",".join(bench.CONFIGS),
                   help=f"comma-separated, from {', '.join(bench.CONFIGS)} (default: all)")
    b.add_argument("--backends", default=None,
                   help=f"comma-separated, from {', '.join(BACKENDS)} (default: all available)")
    b.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    b.add_argument("--repeat", type=int, default=7, help="timing rounds per backend (default 7)")
    b.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    b.add_argument("--quick", action="store_true", help="few rounds: finishes in well under a minute")
    b.add_argument("--torch", action="store_true", help="add PyTorch rows (same weights) when installed")
    b.add_argument("--peak", type=float, default=None, metavar="GFLOPS",
                   help="the machine's peak GFLOP/s, to print %% of peak")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="fit Raissi's x sin(4πx) example and print the test error")
    d.add_argument("--backend", default="auto", help="numpy, cpu, cuda or auto (cpu if built)")
    d.add_argument("--steps", type=int, default=10000, help="Adam steps per learning rate (default 10000)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--plot", metavar="PNG", help="draw data, truth and prediction (needs matplotlib)")
    d.add_argument("--progress", action="store_true", help="show a progress bar")
    d.set_defaults(func=cmd_demo)

    i = sub.add_parser("info", help="list the backends and why any is unavailable")
    i.set_defaults(func=cmd_info)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if getattr(args, "repeat", 1) < 1:
        raise SystemExit("backprop: --repeat must be >= 1")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
