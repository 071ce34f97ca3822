"""Time to error on Raissi's Burgers problem: Adam then L-BFGS, the relative L2 error against the
Cole–Hopf solution logged against training time, for backprop (Taylor mode) or PyTorch (double
backward, torch.optim.LBFGS with the strong Wolfe line search).

    python benchmarks/bench_burgers_error.py --impl backprop [--backend cpu] [--dtype float64]
    python benchmarks/bench_burgers_error.py --impl torch
    python benchmarks/bench_burgers_error.py --report run1.json run2.json

Both start from the same network ([2]+[20]*8+[1] tanh, backprop's initial weights), the same
N_u = 100 data points and N_f = 10,000 collocation points (``pinn.Burgers(seed=0)``), Adam
(lr 1e-3) for --adam steps, then L-BFGS (history --history, at most --lbfgs iterations). Every
--every steps/iterations the error on the 256 x 100 test grid is taken; the clock stops while it
is taken; with --target the run stops once the error is at most that. --threads sets both
libraries' threads. --report prints, per run, the training time at which the error first reached
1e-1, 1e-2, 3e-3 and 1e-3.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

TARGETS = (1e-1, 1e-2, 3e-3, 1e-3)


class Reached(Exception):
    """The error reached --target: training stops there."""


class Clock:
    """Training time: stopped while the error is measured."""

    def __init__(self):
        self.total, self.since = 0.0, time.perf_counter()

    def pause(self):
        self.total += time.perf_counter() - self.since
        return self.total

    def resume(self):
        self.since = time.perf_counter()


def run_backprop(problem, args, record):
    from backprop import objective
    from backprop.optim import LBFGS
    from backprop.optim import Adam
    from backprop.train import Trainer
    if args.dtype == "float32":
        for k in ("Xf", "Xu", "Uu"):
            setattr(problem, k, getattr(problem, k).astype(np.float32))
    net = problem.network(backend=args.backend, dtype=args.dtype, seed=0)

    def error():
        return problem.error(net)

    trainer = Trainer(net, objective=problem.loss, optimizer=Adam(lr=1e-3))
    for step in range(1, args.adam + 1):
        loss = trainer.step(None, None)
        if step % args.every == 0:
            record("adam", step, loss, error)
    lbfgs = LBFGS(history_size=args.history, max_iter=args.lbfgs, tolerance_grad=1e-12,
                  tolerance_change=1e-15)

    def every(iteration, loss):
        if iteration % args.every == 0:
            record("lbfgs", iteration, loss, error)

    try:
        result = lbfgs.minimize(net, lambda: objective.value_and_grads(net, problem.loss), callback=every)
    except Reached as stop:
        return f"L-BFGS: stopped at the target ({stop})"
    record("end", result.n_iter, result.loss, error)
    return f"L-BFGS: {result.reason}, {result.n_eval} evaluations"


def run_torch(problem, args, record):
    import torch
    torch.set_num_threads(args.threads)
    ref = problem.network(backend="numpy", dtype=args.dtype, seed=0)
    params = []
    for W, b in zip(ref.weights, ref.biases):
        params += [torch.tensor(np.asarray(W, args.dtype), requires_grad=True),
                   torch.tensor(np.asarray(b, args.dtype).reshape(-1), requires_grad=True)]
    Xf, Xu, Uu, Xt = (torch.tensor(np.asarray(a, args.dtype))
                      for a in (problem.Xf, problem.Xu, problem.Uu, problem.X_test))
    from backprop.pinn import NU as nu

    def net(X):
        A, n = X, len(params) // 2
        for l in range(n):
            A = A @ params[2 * l] + params[2 * l + 1]
            if l < n - 1:
                A = torch.tanh(A)
        return A

    def loss_fn():
        x = Xf.clone().requires_grad_(True)
        u = net(x)
        du = torch.autograd.grad(u.sum(), x, create_graph=True)[0]
        u_x, u_t = du[:, 0:1], du[:, 1:2]
        u_xx = torch.autograd.grad(u_x.sum(), x, create_graph=True)[0][:, 0:1]
        r = u_t + u * u_x - nu * u_xx
        return ((net(Xu) - Uu) ** 2).mean() + (r ** 2).mean()

    def error():
        with torch.no_grad():
            U = net(Xt).numpy().reshape(-1)
        return float(np.linalg.norm(U - problem.U_test) / np.linalg.norm(problem.U_test))

    opt = torch.optim.Adam(params, lr=1e-3)
    for step in range(1, args.adam + 1):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        if step % args.every == 0:
            record("adam", step, float(loss.detach()), error)
    # torch's L-BFGS keeps its history and counters between step() calls: --every iterations per
    # call, so that the error can be logged as often as backprop's
    opt = torch.optim.LBFGS(params, lr=1, max_iter=args.every, max_eval=args.every * 5 // 4,
                            history_size=args.history, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")
    evals, last = 0, float("nan")

    def closure():
        nonlocal evals, last
        evals += 1
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        last = float(loss.detach())
        return loss

    done = 0
    while done < args.lbfgs:
        opt.step(closure)
        state = opt.state[opt._params[0]]
        iters = state.get("n_iter", done)
        if iters == done:  # converged: no iteration taken
            break
        done = iters
        record("lbfgs", done, last, error)  # the loss of the last evaluation
    return f"L-BFGS: {done} iterations, {evals} evaluations"


def time_to(log, target):
    for phase, it, seconds, loss, err in log:
        if err <= target:
            return seconds, phase, it
    return None


def report(paths):
    print(f"{'run':40s} " + " ".join(f"{'err <= %g' % t:>22s}" for t in TARGETS) + f" {'final error':>12s}")
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        cells = []
        for t in TARGETS:
            hit = time_to(data["log"], t)
            cells.append(f"{hit[0]:8.1f} s ({hit[1]} {hit[2]})" if hit else "not reached")
        final = data["log"][-1]
        print(f"{data['name']:40s} " + " ".join(f"{c:>22s}" for c in cells) + f" {final[4]:12.3e}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", choices=("backprop", "torch"))
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    ap.add_argument("--adam", type=int, default=1000)
    ap.add_argument("--lbfgs", type=int, default=20000)
    ap.add_argument("--history", type=int, default=50)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--target", type=float, help="stop once the error is at most this")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", help="the log as JSON (default: burgers_<impl>_<dtype>.json)")
    ap.add_argument("--report", nargs="+", metavar="JSON")
    args = ap.parse_args(argv)
    if args.report:
        return report(args.report)
    if args.impl is None:
        ap.error("give --impl backprop|torch, or --report")
    import backprop as bp
    from backprop import pinn
    bp.set_num_threads(args.threads)
    problem = pinn.Burgers(n_f=10000, seed=0)
    problem.U_test  # the reference, computed before the clock starts
    name = (f"backprop {args.backend}" if args.impl == "backprop" else "torch") + f" {args.dtype}, {args.threads} thr"
    log, clock = [], Clock()

    def record(phase, it, loss, error):
        seconds = clock.pause()
        err = error()
        log.append((phase, it, seconds, float(loss), err))
        print(f"{phase:5s} {it:6d} {seconds:8.1f} s  loss {loss:.3e}  error {err:.3e}", flush=True)
        if args.target is not None and err <= args.target:
            raise Reached(f"error {err:.3e} after {phase} {it}, {seconds:.1f} s")
        clock.resume()

    runner = run_backprop if args.impl == "backprop" else run_torch
    try:
        how = runner(problem, args, record)
    except Reached as stop:
        how = f"stopped at the target: {stop}"
    print(how)
    out = args.out or f"burgers_{args.impl}_{args.dtype}.json"
    with open(out, "w") as f:
        json.dump({"name": name, "args": vars(args), "how": how, "log": log,
                   "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv)}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
