"""``backprop bench --pinn``: one Adam step of the Burgers loss (data term + residual term).

Same network ([2]+[20]*8+[1] tanh), collocation points, data points and initial weights for
every row, float32, timed alternately round after round (median per step):

- backprop, Taylor mode (``net.derivatives``) on numpy, and on cpu when its kernels exist;
- backprop through the recorded path (``bp.grad(..., create_graph=True)``), numpy and cpu;
- PyTorch eager with double backward (``torch.autograd.grad(..., create_graph=True)``), when
  torch is installed;
- JAX: ``jit`` of a step built on ``vmap`` of nested ``grad``, when jax is installed.
"""

from __future__ import annotations

import math
import os
import statistics
import time

import numpy as np

from . import pinn
from .backends import why_unavailable
from .optim import Adam
from .tensor import mse
from .train import Trainer

LR = 1e-3
# Each round, every row sleeps SETTLE_SECONDS (the previous row's threads go idle), then runs
# about min_time untimed before the timed run of the same length: a core that has been idle
# takes a while to come back to speed (here: the second core ran the first ~150 ms of steps
# after a 0.2 s pause 30-70 % slower), and a training run does not pause between steps.
SETTLE_SECONDS = 0.2


class _Backprop:
    def __init__(self, problem, backend, dtype, recorded, seed):
        self.net = problem.network(backend=backend, dtype=dtype, seed=seed)
        Xf = np.asarray(problem.Xf, dtype)
        Xu, Uu = np.asarray(problem.Xu, dtype), np.asarray(problem.Uu, dtype)
        residual = pinn.burgers_residual_recorded if recorded else problem.residual

        def loss(net):
            r = residual(net, Xf)
            return mse(net(Xu), Uu) + (r ** 2).mean()
        self.loss = loss
        self.trainer = Trainer(self.net, objective=loss, optimizer=Adam(lr=LR))

    def value(self):
        return float(self.loss(self.net))

    def run(self, steps):
        for _ in range(steps):
            self.trainer.step(None, None)
        self.net.backend.synchronize()


class _Torch:
    def __init__(self, problem, weights, biases, dtype):
        import torch
        self.torch = torch
        td = getattr(torch, dtype)
        self.params = []
        for W, b in zip(weights, biases):
            self.params += [torch.tensor(np.asarray(W, dtype), requires_grad=True),
                            torch.tensor(np.asarray(b, dtype).reshape(-1), requires_grad=True)]
        self.Xf = torch.tensor(np.asarray(problem.Xf, dtype))
        self.Xu = torch.tensor(np.asarray(problem.Xu, dtype))
        self.Uu = torch.tensor(np.asarray(problem.Uu, dtype))
        self.opt = torch.optim.Adam(self.params, lr=LR)
        self.td = td

    def net(self, X):
        A = X
        n = len(self.params) // 2
        for l in range(n):
            A = A @ self.params[2 * l] + self.params[2 * l + 1]
            if l < n - 1:
                A = self.torch.tanh(A)
        return A

    def loss(self):
        torch = self.torch
        x = self.Xf.clone().requires_grad_(True)
        u = self.net(x)
        du = torch.autograd.grad(u.sum(), x, create_graph=True)[0]
        u_x, u_t = du[:, 0:1], du[:, 1:2]
        u_xx = torch.autograd.grad(u_x.sum(), x, create_graph=True)[0][:, 0:1]
        r = u_t + u * u_x - pinn.NU * u_xx
        return ((self.net(self.Xu) - self.Uu) ** 2).mean() + (r ** 2).mean()

    def value(self):
        return float(self.loss().detach())

    def run(self, steps):
        for _ in range(steps):
            self.opt.zero_grad(set_to_none=False)
            self.loss().backward()
            self.opt.step()


class _Jax:
    def __init__(self, problem, weights, biases, dtype):
        import jax
        import jax.numpy as jnp
        self.jax = jax
        params = [(jnp.asarray(np.asarray(W, dtype)), jnp.asarray(np.asarray(b, dtype).reshape(-1)))
                  for W, b in zip(weights, biases)]
        Xf, Xu, Uu = (jnp.asarray(np.asarray(a, dtype)) for a in (problem.Xf, problem.Xu, problem.Uu))
        nu = pinn.NU

        def u_point(params, x, t):
            A = jnp.stack([x, t])
            for l, (W, b) in enumerate(params):
                A = A @ W + b
                if l < len(params) - 1:
                    A = jnp.tanh(A)
            return A[0]

        u_x = jax.grad(u_point, argnums=1)
        u_t = jax.grad(u_point, argnums=2)
        u_xx = jax.grad(u_x, argnums=1)

        def f_point(params, x, t):
            return u_t(params, x, t) + u_point(params, x, t) * u_x(params, x, t) - nu * u_xx(params, x, t)

        f = jax.vmap(f_point, in_axes=(None, 0, 0))
        u = jax.vmap(u_point, in_axes=(None, 0, 0))

        def loss(params):
            r = f(params, Xf[:, 0], Xf[:, 1])
            return jnp.mean((u(params, Xu[:, 0], Xu[:, 1]) - Uu[:, 0]) ** 2) + jnp.mean(r ** 2)

        b1, b2, eps = 0.9, 0.999, 1e-8

        @jax.jit
        def step(params, m, v, k):
            g = jax.grad(loss)(params)
            m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
            v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
            mhat = 1 / (1 - b1 ** k)
            vhat = 1 / (1 - b2 ** k)
            params = jax.tree_util.tree_map(
                lambda p, m, v: p - LR * (m * mhat) / (jnp.sqrt(v * vhat) + eps), params, m, v)
            return params, m, v

        self.loss = jax.jit(loss)
        self.step = step
        self.params = params
        self.m = jax.tree_util.tree_map(jnp.zeros_like, params)
        self.v = jax.tree_util.tree_map(jnp.zeros_like, params)
        self.k = 0

    def value(self):
        return float(self.loss(self.params))

    def run(self, steps):
        for _ in range(steps):
            self.k += 1
            self.params, self.m, self.v = self.step(self.params, self.m, self.v, float(self.k))
        self.jax.block_until_ready(self.params)


def _importable(name):
    if name == "torch":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench._torch_available
    try:
        __import__(name)
    except ImportError as exc:
        return str(exc)
    return None


def run(collocation=(10000, 1000), repeat=5, dtype="float32", seed=0, min_time=0.2,
        settle=SETTLE_SECONDS, log=print):
    """Times the rows for each N_f; returns {"rows": [...], "skipped": {...}}."""
    skipped = {}
    rows = []
    cpu_reason = why_unavailable("cpu")
    taylor_cpu = pinn.lacks_taylor("cpu") if cpu_reason is None else cpu_reason
    if cpu_reason is not None:
        skipped["cpu"] = cpu_reason
    elif taylor_cpu is not None:
        skipped["backprop taylor cpu"] = taylor_cpu
    for lib in ("torch", "jax"):
        reason = _importable(lib)
        if reason is not None:
            skipped[lib] = reason
    for name, reason in skipped.items():
        log(f"skipped {name}: {reason}")
    for n_f in collocation:
        problem = pinn.Burgers(n_f=n_f, seed=seed)
        runners = {"backprop taylor numpy": _Backprop(problem, "numpy", dtype, False, seed),
                   "backprop recorded numpy": _Backprop(problem, "numpy", dtype, True, seed)}
        if cpu_reason is None:
            if taylor_cpu is None:
                runners["backprop taylor cpu"] = _Backprop(problem, "cpu", dtype, False, seed)
            runners["backprop recorded cpu"] = _Backprop(problem, "cpu", dtype, True, seed)
        ref = runners["backprop taylor numpy"].net
        if "torch" not in skipped:
            runners["torch eager (double backward)"] = _Torch(problem, ref.weights, ref.biases, dtype)
        if "jax" not in skipped:
            runners["jax jit(vmap(grad(grad)))"] = _Jax(problem, ref.weights, ref.biases, dtype)
        values = {name: r.value() for name, r in runners.items()}  # same loss before any step
        steps, samples = {}, {name: [] for name in runners}
        for name, r in runners.items():
            start = time.perf_counter()
            r.run(1)  # warm-up (and JAX's compilation)
            start = time.perf_counter()
            r.run(1)
            steps[name] = max(1, math.ceil(min_time / max(time.perf_counter() - start, 1e-7)))
        for _ in range(repeat):
            for name, r in runners.items():
                time.sleep(settle)
                r.run(steps[name])  # warm-up, untimed: see WARM_UP
                start = time.perf_counter()
                r.run(steps[name])
                samples[name].append((time.perf_counter() - start) / steps[name])
        base = statistics.median(samples["backprop taylor numpy"])
        for name in runners:
            t = statistics.median(samples[name])
            rows.append({"n_f": n_f, "row": name, "dtype": dtype, "ms_per_step": 1e3 * t,
                         "vs_taylor_numpy": base / t, "initial_loss": values[name]})
    return {"rows": rows, "skipped": skipped}


def format_table(result):
    lines = [f"{'N_f':>6}  {'implementation':32s}  {'ms/step':>9}  {'speed vs taylor numpy':>21}  "
             f"{'initial loss':>12}"]
    for r in result["rows"]:
        lines.append(f"{r['n_f']:>6}  {r['row']:32s}  {r['ms_per_step']:9.2f}  "
                     f"{r['vs_taylor_numpy']:20.2f}x  {r['initial_loss']:12.6g}")
    return "\n".join(lines)
