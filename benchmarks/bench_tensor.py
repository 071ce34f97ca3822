"""One Raissi-network training step written with Tensors, against PyTorch eager and fit's steps.

    python benchmarks/bench_tensor.py [--backend cpu] [--dtype float32] [--rounds 7] [--steps 300]

The network is [1]+[10]*10+[1] (tanh), the batch 100 points, the loss sse, the optimizer plain
SGD. Every row starts from the same initial weights and takes the same steps on the same batch;
the rows alternate round after round and the table shows each row's median µs/step:

    tensor        F = net(X) (one dense node per layer), L = bp.sse(F, Y), L.backward(),
                  then the backend's sgd_update on each parameter Tensor (value and grad)
    tensor-obj    the same through backprop.objective.step (gradients into the model's buffers,
                  then the library's optimizer state: what fit(loss=callable) runs)
    torch         the same step in PyTorch eager on the CPU (x @ W + b, tanh, ½Σ(F−Y)²,
                  backward, torch.optim.SGD), when PyTorch is installed
    fit-kernels   Trainer(net, "sse", SGD, fused=False).step: the MLP's kernel-by-kernel path
    fit-fused     Trainer(net, "sse", SGD, fused=True).step: the backend's whole-step native call
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

import backprop as bp
from backprop import objective
from backprop.optim import OptimizerState
from backprop.tensor.kernels import kernels_of
from backprop.train import Trainer

LAYERS = [1] + [10] * 10 + [1]
BATCH = 100
LR = 1e-4


def _data(dtype):
    x = np.linspace(-1, 1, BATCH).reshape(-1, 1)
    return x.astype(dtype), (x * np.sin(4 * np.pi * x)).astype(dtype)


def tensor_step(net, X, Y):
    params = net.parameters()
    update = kernels_of(net.backend).sgd_update  # the backend's sgd_update, outputs known

    def step():
        L = bp.sse(net(X), Y)
        L.backward()
        for p in params:
            update(p.value, p.grad, LR)
            p.zero_grad()
        return L
    return step


def objective_step(net, X, Y):
    state = OptimizerState(bp.optim.SGD(lr=LR), net.backend, net.params)
    target = objective.loss_objective(bp.sse, X, Y)
    return lambda: objective.step(net, state, target)


def torch_step(net, X, Y, torch):
    dt = torch.float32 if net.dtype == np.float32 else torch.float64
    Ws = [torch.tensor(w, dtype=dt, requires_grad=True) for w in net.weights]
    bs = [torch.tensor(b, dtype=dt, requires_grad=True) for b in net.biases]
    opt = torch.optim.SGD(Ws + bs, lr=LR)
    Xt, Yt = torch.from_numpy(np.asarray(X)), torch.from_numpy(np.asarray(Y))
    last = len(Ws) - 1

    def step():
        A = Xt
        for l, (W, b) in enumerate(zip(Ws, bs)):
            A = torch.addmm(b, A, W)
            if l < last:
                A = torch.tanh(A)
        L = 0.5 * ((A - Yt) ** 2).sum()
        opt.zero_grad(set_to_none=True)
        L.backward()
        opt.step()
        return L
    step.params = Ws + bs
    return step


def trainer_step(net, X, Y, fused):
    trainer = Trainer(net, "sse", bp.optim.SGD(lr=LR), fused=fused)
    return lambda: trainer.step(X, Y)


def _number(value):
    """A step's loss as a float (a Tensor, a torch tensor or a float)."""
    return float(value.item()) if hasattr(value, "item") else float(value)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=300, help="steps per row per round")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch.set_num_threads (default: PyTorch's own choice)")
    args = ap.parse_args(argv)

    base = bp.MLP(LAYERS, activation="tanh", backend=args.backend, dtype=args.dtype, seed=0)
    X_host, Y_host = _data(args.dtype)
    X, Y = base.backend.asarray(X_host, args.dtype), base.backend.asarray(Y_host, args.dtype)
    rows = {"tensor": tensor_step(base.copy(), X, Y),
            "tensor-obj": objective_step(base.copy(), X, Y)}
    # PyTorch's OpenMP threads spin between operations and steal the core the other rows need
    # (see RESULTS.md, "the busy-wait trap"); backprop bench sets the same before importing torch
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        rows["torch"] = torch_step(base, X_host, Y_host, torch)
        torch_note = f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        torch_note = "PyTorch not installed: no torch row"
    rows["fit-kernels"] = trainer_step(base.copy(), X, Y, fused=False)
    if hasattr(base.backend, "make_trainer"):
        rows["fit-fused"] = trainer_step(base.copy(), X, Y, fused=True)

    first = {name: _number(step()) for name, step in rows.items()}  # the same first loss everywhere
    times = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, step in rows.items():
            for _ in range(10):
                step()
            base.backend.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            base.backend.synchronize()
            times[name].append((time.perf_counter() - t0) / args.steps * 1e6)

    print(f"machine: {platform.processor() or platform.machine()}, {args.backend} backend, "
          f"{args.dtype}; {torch_note}")
    print(f"Raissi step [1]+[10]*10+[1], batch {BATCH}, sse, SGD; median of {args.rounds} rounds "
          f"of {args.steps} steps")
    ref = statistics.median(times["tensor"])
    print(f"{'row':<12} {'us/step':>9} {'vs tensor':>10} {'first loss':>14}")
    for name in rows:
        med = statistics.median(times[name])
        print(f"{name:<12} {med:9.1f} {med / ref:9.2f}x {first[name]:14.8g}")
    if "torch" in rows:
        print(f"torch / tensor = {statistics.median(times['torch']) / ref:.2f}x")


if __name__ == "__main__":
    main()
