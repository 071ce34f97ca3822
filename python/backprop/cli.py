"""The command line: ``backprop bench``, ``demo``, ``info``, ``pinn``, ``train`` and ``predict``."""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shlex
import signal
import sys

from . import __version__, bench, bench_distributed, bench_pinn, cli_data, demo, pinn
from .backends import BACKENDS, why_unavailable
from .cli_common import EXIT_USAGE, UsageError, check_writable, pick_backend


def _names(text, valid, what, plural):
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError(f"no {plural} given (valid: {', '.join(valid)})")
    for name in names:
        if name not in valid:
            raise UsageError(f"unknown {what} {name!r}; valid: {', '.join(valid)}")
    return names


def cmd_bench(args):
    if args.distributed:  # under mpiexec: data-parallel steps (backprop.bench_distributed)
        configs = _names(args.configs if args.configs != ",".join(bench.CONFIGS) else "mnist,wide",
                         tuple(bench.CONFIGS), "configuration", "configurations")
        backend = (args.backends or "cpu").split(",")[0]
        return bench_distributed.main(configs, backend, args.dtype, steps=3 if args.quick else 10,
                                      repeat=min(args.repeat, 3) if args.quick else args.repeat)
    if args.pinn:
        return _bench_pinn(args)
    configs = _names(args.configs, tuple(bench.CONFIGS), "configuration", "configurations")
    backends = (_names(args.backends, BACKENDS, "backend", "backends")
                if args.backends is not None else None)
    if args.repeat < 1:
        raise UsageError(f"--repeat must be >= 1; got {args.repeat}")
    if args.peak is not None and not (math.isfinite(args.peak) and args.peak > 0):
        raise UsageError(f"--peak must be a finite number of GFLOP/s > 0; got {args.peak}")
    if args.json:
        check_writable(args.json, "--json")  # before the benchmark runs, not after
    result = bench.run(configs=configs, backends=backends, dtype=args.dtype, repeat=args.repeat,
                       torch=args.torch, quick=args.quick, peak_gflops=args.peak)
    result["command"] = "backprop " + " ".join(shlex.quote(a) for a in args.argv)
    print(f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; "
          f"one training step (forward, backward, SGD update), median of {args.repeat if not args.quick else min(args.repeat, 3)} rounds")
    print(bench.format_table(result))
    if args.json:
        _write_json(result, args.json)
    return 0


def _write_json(result, path):
    """Writes the benchmark's results; a failure (the disk filled up, the folder went away since
    the check) is one line, the table already printed."""
    try:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
    except OSError as exc:
        raise UsageError(f"--json {path}: {exc.strerror or exc} (the table above has the results)") from None
    print(f"wrote {path}")


def _bench_pinn(args):
    if args.repeat < 1:
        raise UsageError(f"--repeat must be >= 1; got {args.repeat}")
    if args.json:
        check_writable(args.json, "--json")
    collocation = (1000, 200) if args.quick else (10000, 1000)
    repeat = min(args.repeat, 3) if args.quick else args.repeat
    result = bench_pinn.run(collocation=collocation, repeat=repeat,
                            min_time=0.05 if args.quick else 0.2)
    result["command"] = "backprop " + " ".join(shlex.quote(a) for a in args.argv)
    result["machine"] = {"cpu": bench.cpu_model(), "cores": os.cpu_count()}
    print(f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; one Adam step "
          f"of the Burgers loss ([2]+[20]*8+[1] tanh, N_u = 100, float32), median of {repeat} rounds")
    print(bench_pinn.format_table(result))
    if args.json:
        _write_json(result, args.json)
    return 0


def cmd_demo(args):
    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1; got {args.steps}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0; got {args.seed}")
    backend = pick_backend(args.backend)
    if args.plot:  # before training, not after
        try:
            demo.require_matplotlib()
        except RuntimeError as exc:
            raise UsageError(f"--plot: {exc}") from None
        check_writable(args.plot, "--plot")
    print(f"fitting x sin(4πx) with [1]+[10]*10+[1] tanh on backend {backend!r}: "
          f"{4 * args.steps} full-batch Adam steps (rates 1e-3, 1e-4, 1e-5, 1e-6)")
    result = demo.run(backend=backend, steps=args.steps, seed=args.seed, verbose=args.progress)
    print(f"relative L2 error on 1000 test points: {100 * result['error']:.3f}% "
          f"({result['steps']} steps in {result['seconds']:.1f} s, final loss {result['final_loss']:.3g})")
    if args.plot:
        try:
            demo.plot(result, args.plot)
        except OSError as exc:
            raise UsageError(f"--plot {args.plot}: {exc.strerror or exc}") from None
        print(f"wrote {args.plot}")
    return 0


def cmd_pinn(args):
    for option in ("adam_steps", "lbfgs_iters"):
        value = getattr(args, option)
        if value is not None and value < 0:
            raise UsageError(f"--{option.replace('_', '-')} must be >= 0; got {value}")
    if args.collocation is not None and args.collocation < 1:
        raise UsageError(f"--collocation must be >= 1; got {args.collocation}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0; got {args.seed}")
    if args.backend == "auto":
        backend, why = pinn.default_backend()
        print(f"backend {backend!r} (auto): {why}")
    else:
        backend = pick_backend(args.backend)
        why = pinn.lacks_taylor(backend)
        if why is not None:
            raise UsageError(f"--backend {backend}: {why}")
    pinn.run(args.problem, backend=backend, adam_steps=args.adam_steps,
             lbfgs_iters=args.lbfgs_iters, n_f=args.collocation, seed=args.seed,
             sampling=args.sampling)
    return 0


def cmd_info(args):
    import numpy

    print(f"backprop {__version__}, numpy {numpy.__version__}")
    for name in BACKENDS:
        reason = why_unavailable(name)
        print(f"  {name:6s} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="backprop", description=__doc__)
    parser.add_argument("--version", action="version", version=f"backprop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_data.add_commands(sub)  # train, predict

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
    b.add_argument("--pinn", action="store_true",
                   help="one Adam step of the Burgers PINN loss: Taylor mode, the recorded path, "
                        "PyTorch and JAX when installed (N_f 10,000 and 1,000; --quick: 1,000 and 200)")
    b.add_argument("--distributed", action="store_true",
                   help="under mpiexec -n P: data-parallel steps per second and the allreduce's "
                        "share (default configs mnist,wide; backend cpu)")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="fit Raissi's x sin(4πx) example and print the test error")
    d.add_argument("--backend", default="auto", help="numpy, cpu, cuda or auto (cpu if built)")
    d.add_argument("--steps", type=int, default=10000, help="Adam steps per learning rate (default 10000)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--plot", metavar="PNG", help="draw data, truth and prediction (needs matplotlib)")
    d.add_argument("--progress", action="store_true", help="show a progress bar")
    d.set_defaults(func=cmd_demo)

    p = sub.add_parser("pinn", help="train a physics-informed example and print its error")
    p.add_argument("problem", choices=["poisson1d", "poisson2d", "burgers"])
    p.add_argument("--backend", default="auto",
                   help="numpy, cpu, cuda or auto (cpu if it implements the Taylor kernels, else numpy)")
    p.add_argument("--adam-steps", type=int, default=None,
                   help="Adam steps (lr 1e-3) before L-BFGS (default: 2000; burgers 1000)")
    p.add_argument("--lbfgs-iters", type=int, default=None,
                   help="L-BFGS iterations at most (default: poisson1d 300, poisson2d 500, burgers 20000)")
    p.add_argument("--collocation", type=int, default=None, metavar="N_F",
                   help="collocation points (default: poisson1d 64, poisson2d 1000, burgers 10000)")
    p.add_argument("--sampling", default="lhs", choices=["lhs", "uniform"],
                   help="collocation points: Latin hypercube (default) or uniform")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_pinn)

    i = sub.add_parser("info", help="list the backends and why any is unavailable")
    i.set_defaults(func=cmd_info)
    return parser


def _quiet_stdout():
    """After a broken pipe: point stdout at /dev/null so the exit flush writes nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # a stdout without a file descriptor (captured output)


def main(argv=None):
    """Runs one command; returns its exit status. A command-line error (a bad option value, an
    unknown name, an unwritable output path) prints ``backprop: error: ...`` on stderr and exits
    with status 2, without a traceback; so does argparse for the options it parses."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
        return status
    except UsageError as exc:
        print(f"backprop: error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except BrokenPipeError:  # `backprop info | head -1`: the reader left; stop quietly
        _quiet_stdout()
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
