"""The benchmark: one full training step (forward, backward, SGD update) per backend per configuration.

Before timing, every backend's gradients are compared with numpy's on the same inputs and the
same initial weights; a backend that disagrees is reported and not timed. Backends are timed
alternately, round after round, and the median per-step time of the rounds is reported, so that
a noisy machine slows every backend alike.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

from .backends import BACKENDS, why_unavailable
from .model import MLP
from .optim import SGD
from .train import Trainer


@dataclass(frozen=True)
class Config:
    name: str
    layers: tuple
    batch: int
    activation: str
    loss: str

    def flops_per_step(self):
        """Multiply-adds ×2 of the three products per layer: forward A W, dW = Aᵀ G, and
        G Wᵀ for every layer but the first (dX is not computed in training)."""
        pairs = list(zip(self.layers[:-1], self.layers[1:]))
        forward = sum(2 * self.batch * p * q for p, q in pairs)
        backward_dW = forward
        backward_G = sum(2 * self.batch * p * q for p, q in pairs[1:])
        return forward + backward_dW + backward_G


CONFIGS = {
    "raissi": Config("raissi", (1,) + (10,) * 10 + (1,), 100, "tanh", "sse"),
    "small": Config("small", (64, 128, 128, 10), 256, "tanh", "mse"),
    "mnist": Config("mnist", (784, 512, 512, 10), 1024, "relu", "cross_entropy"),
    "wide": Config("wide", (1024, 2048, 2048, 1024), 2048, "tanh", "mse"),
}

# OpenBLAS (numpy's and PyTorch's) and OpenMP worker threads spin for about 0.1 s after a call;
# on a small machine they would slow whichever library runs next. Each timed block therefore
# starts after this pause, so a row measures its own backend alone.
SETTLE_SECONDS = 0.2

LR = 1e-4  # small enough that repeated steps on one batch stay finite in every configuration


def make_data(config, seed=0):
    """Inputs and targets for one batch of ``config`` (Raissi's x sin 4πx for "raissi")."""
    rng = np.random.default_rng(seed)
    n, p0, k = config.batch, config.layers[0], config.layers[-1]
    if config.name == "raissi":
        X = np.linspace(-1, 1, n).reshape(-1, 1)
        return X, X * np.sin(4 * np.pi * X)
    X = rng.normal(size=(n, p0))
    if config.loss == "cross_entropy":
        return X, rng.integers(0, k, size=n)
    if config.loss == "bce":
        return X, (rng.random((n, k)) < 0.5).astype(float)
    return X, 0.5 * rng.normal(size=(n, k))


def max_grad_diff(grads, reference):
    """max over parameter arrays of max|g - g_ref| / max|g_ref|."""
    worst = 0.0
    for g, r in zip(grads.weights + grads.biases, reference.weights + reference.biases):
        scale = max(float(np.max(np.abs(r))), 1e-30)
        worst = max(worst, float(np.max(np.abs(np.asarray(g, dtype=np.float64) - r))) / scale)
    return worst


# The agreement check runs in float64 whatever dtype is timed: in float32, ReLU units whose
# pre-activation rounds to the other side of zero make honest backends differ by percents.
GRAD_TOLERANCE = 1e-9


class _BackpropRunner:
    """Times steps of one backend on one configuration."""

    def __init__(self, config, backend, dtype, X, Y, seed):
        self.net = MLP(config.layers, activation=config.activation, backend=backend,
                       dtype=dtype, seed=seed)
        self.backend = self.net.backend
        self.trainer = Trainer(self.net, config.loss, SGD(lr=LR))
        self.X = self.net.input_array(X)
        self.Y = self.net.target_array(Y, config.batch, config.loss)

    def grads(self, X, Y, loss):
        return self.net.loss_and_grad(X, Y, loss)[1]

    def run(self, steps):
        for _ in range(steps):
            self.trainer.step(self.X, self.Y)
        self.backend.synchronize()

    def launches(self):
        return getattr(self.backend, "launches", None)


class _TorchRunner:
    """The same network, weights and SGD step in PyTorch (eager), as the outside reference."""

    def __init__(self, config, dtype, weights, X, Y):
        import torch

        self.torch = torch
        tdtype = getattr(torch, dtype)
        layers, acts = [], {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}
        for l, W in enumerate(weights):
            linear = torch.nn.Linear(W.shape[0], W.shape[1], dtype=tdtype)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(W.T.copy()))
                linear.bias.zero_()
            layers.append(linear)
            if l < len(weights) - 1:
                layers.append(acts[config.activation]())
        self.model = torch.nn.Sequential(*layers)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.X = torch.from_numpy(np.asarray(X, dtype=dtype))
        if config.loss == "cross_entropy":
            self.Y = torch.from_numpy(np.asarray(Y, dtype=np.int64))
        else:
            self.Y = torch.from_numpy(np.asarray(Y, dtype=dtype))
        self.loss_fn = {
            "sse": lambda F, Y: 0.5 * ((F - Y) ** 2).sum(),
            "mse": torch.nn.functional.mse_loss,
            "cross_entropy": torch.nn.functional.cross_entropy,
            "bce": torch.nn.functional.binary_cross_entropy_with_logits,
        }[config.loss]

    def grads(self, X, Y, loss):
        self.model.zero_grad()
        self.loss_fn(self.model(self.X), self.Y).backward()
        linears = [m for m in self.model if isinstance(m, self.torch.nn.Linear)]

        class _G:
            weights = [m.weight.grad.numpy().T.astype(np.float64) for m in linears]
            biases = [m.bias.grad.numpy().astype(np.float64) for m in linears]
        return _G

    def run(self, steps):
        for _ in range(steps):
            self.optimizer.zero_grad(set_to_none=False)
            self.loss_fn(self.model(self.X), self.Y).backward()
            self.optimizer.step()

    def launches(self):
        return None


def _torch_available():
    # PyTorch's OpenMP threads (its own libgomp) spin after every op; alternating with numpy's and
    # the cpu backend's OpenBLAS threads on a 2-core machine, the spinning pools starve each other
    # (measured: a 0.4 ms cpu step took 55 ms, PyTorch's own Raissi step 5 ms). A passive wait
    # policy, read when torch loads libgomp, stops that; an OMP_WAIT_POLICY the user set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def agreement(config, backends, torch, X, Y, seed, log):
    """Each backend's (and PyTorch's) float64 gradients against numpy's on the same batch and
    weights: ({name: max_grad_diff}, [names within GRAD_TOLERANCE])."""
    checkers = {b: _BackpropRunner(config, b, "float64", X, Y, seed) for b in backends}
    if torch:
        checkers["torch"] = _TorchRunner(config, "float64", checkers["numpy"].net.weights, X, Y)
    reference = checkers["numpy"].grads(X, Y, config.loss)
    diffs, passed = {}, []
    for name, checker in checkers.items():
        diffs[name] = 0.0 if name == "numpy" else max_grad_diff(checker.grads(X, Y, config.loss), reference)
        if diffs[name] > GRAD_TOLERANCE:
            log(f"{config.name}/{name}: float64 gradients differ from numpy's by {diffs[name]:.2e} "
                f"(tolerance {GRAD_TOLERANCE:.0e}); not timed")
        else:
            passed.append(name)
    return diffs, passed


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(configs=("raissi", "small", "mnist", "wide"), backends=None, dtype="float32", repeat=7,
        torch=False, quick=False, seed=0, peak_gflops=None, min_time=0.05, settle=SETTLE_SECONDS,
        log=print):
    """Runs the benchmark; returns {"rows": [...], "skipped": {...}, "machine": {...}}."""
    if quick:
        repeat, min_time = min(repeat, 3), 0.01
    backends = list(BACKENDS if backends is None else backends)
    if "numpy" not in backends:
        backends.insert(0, "numpy")  # the reference every row is compared with
    skipped = {}
    for name in backends:
        reason = why_unavailable(name)
        if reason is not None:
            skipped[name] = reason
    backends = [b for b in backends if b not in skipped]
    if torch:
        reason = _torch_available()
        if reason is not None:
            skipped["torch"] = reason
            torch = False
    for name, reason in skipped.items():
        log(f"skipped {name}: {reason}")

    rows = []
    for config_name in configs:
        config = CONFIGS[config_name]
        X, Y = make_data(config, seed)
        diffs, timed = agreement(config, backends, torch, X, Y, seed, log)
        runners = {b: _BackpropRunner(config, b, dtype, X, Y, seed) for b in backends}
        if torch:
            runners["torch"] = _TorchRunner(config, dtype, runners["numpy"].net.weights, X, Y)
        # calibrate: enough steps per measurement to last about min_time
        steps = {}
        for name in timed:
            start = time.perf_counter()
            runners[name].run(1)
            elapsed = time.perf_counter() - start
            steps[name] = max(1, math.ceil(min_time / max(elapsed, 1e-7)))
        samples = {name: [] for name in timed}
        launches = {}
        for _ in range(repeat):
            for name in timed:
                runner = runners[name]
                before = runner.launches()
                time.sleep(settle)
                start = time.perf_counter()
                runner.run(steps[name])
                samples[name].append((time.perf_counter() - start) / steps[name])
                if before is not None:
                    launches[name] = (runner.launches() - before) / steps[name]
        flops = config.flops_per_step()
        base = statistics.median(samples["numpy"]) if "numpy" in samples else None
        for name in runners:
            row = {"config": config_name, "backend": name, "dtype": dtype,
                   "layers": list(config.layers), "batch": config.batch,
                   "max_grad_diff": diffs[name], "us_per_step": None, "gflops": None,
                   "percent_of_peak": None, "speedup_vs_numpy": None,
                   "launches_per_step": launches.get(name)}
            if name in samples:
                t = statistics.median(samples[name])
                row["us_per_step"] = t * 1e6
                row["gflops"] = flops / t / 1e9
                if peak_gflops:
                    row["percent_of_peak"] = 100 * row["gflops"] / peak_gflops
                if base is not None:
                    row["speedup_vs_numpy"] = base / t
            rows.append(row)
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
               "numpy": np.__version__, "platform": platform.platform(),
               "date": datetime.date.today().isoformat()}
    return {"rows": rows, "skipped": skipped, "machine": machine,
            "configs": {name: asdict(CONFIGS[name]) for name in configs}}


def format_table(result):
    """The result as a fixed-width text table."""
    header = ["config", "backend", "dtype", "us/step", "GFLOP/s", "%peak", "vs numpy",
              "max grad diff", "launches"]
    lines = []
    for row in result["rows"]:
        def fmt(value, spec):
            return "-" if value is None else format(value, spec)
        lines.append([row["config"], row["backend"], row["dtype"], fmt(row["us_per_step"], ",.1f"),
                      fmt(row["gflops"], ".2f"), fmt(row["percent_of_peak"], ".0f"),
                      fmt(row["speedup_vs_numpy"], ".2f") + ("x" if row["speedup_vs_numpy"] else ""),
                      fmt(row["max_grad_diff"], ".1e"), fmt(row["launches_per_step"], ".0f")])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    out = ["  ".join(h.rjust(w) if i >= 3 else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    out.append("  ".join("-" * w for w in widths))
    for line in lines:
        out.append("  ".join(c.rjust(w) if i >= 3 else c.ljust(w)
                             for i, (c, w) in enumerate(zip(line, widths))))
    return "\n".join(out)


__all__ = ["CONFIGS", "Config", "format_table", "make_data", "run"]
