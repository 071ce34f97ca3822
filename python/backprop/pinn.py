"""Physics-informed examples: 1-D and 2-D Poisson, and viscous Burgers (Raissi et al., 2019).

    from backprop import pinn
    result = pinn.run("burgers", adam_steps=1000, lbfgs_iters=20000)  # prints the error
    problem = pinn.Burgers(n_f=10000, seed=0)
    net = problem.network(backend="numpy")
    loss = problem.loss                      # net -> scalar Tensor (data term + residual term)

The residual uses ``net.derivatives`` (Taylor mode, one forward pass of derivative streams with
an explicit backward; kernels on every backend). ``default_backend()`` picks "cpu" when
``get_backend("cpu")`` runs ``taylor_forward`` on a tiny input (the module is built), "numpy"
otherwise. That choice is the example's, printed; the kernels themselves never fall back.
Training is Adam, then L-BFGS keeping 50 pairs (Raissi et al.'s setting). ``burgers_reference``
is the exact solution by the Cole–Hopf transform, its heat-kernel integral by Gauss–Hermite
quadrature (no data file).
"""

from __future__ import annotations

import math
import time

import numpy as np

from . import objective as _objective
from .model import MLP
from .optim import LBFGS, Adam
from .tensor import Tensor, grad, mse
from .train import Trainer

PROBLEMS = ("poisson1d", "poisson2d", "burgers")
NU = 0.01 / math.pi  # Burgers viscosity
LBFGS_HISTORY = 50  # the (s, y) pairs L-BFGS keeps: Raissi et al.'s setting (SciPy's maxcor)


def lacks_taylor(backend):
    """None when ``backend`` runs the Taylor kernels (tried on a tiny input), else why not."""
    try:
        net = MLP([1, 2, 1], activation="tanh", backend=backend, dtype="float64", seed=0)
        net.derivatives(np.zeros((1, 1)), first=(0,), second=((0, 0),))
    except NotImplementedError as exc:
        return f"the {backend} backend does not implement the Taylor kernels yet ({exc})"
    except Exception as exc:  # the backend is not built here
        return f"the {backend} backend is unavailable ({type(exc).__name__}: {exc})"
    return None


def default_backend():
    """("cpu", why) when the cpu backend implements the Taylor kernels, else ("numpy", why)."""
    why = lacks_taylor("cpu")
    if why is not None:
        return "numpy", why
    return "cpu", "the cpu backend implements taylor_forward/taylor_backward"


def sample(n, lows, highs, rng, method="lhs"):
    """n points in the box [lows, highs]: uniform, or a Latin hypercube (one point per stratum
    of each coordinate)."""
    lows, highs = np.asarray(lows, float), np.asarray(highs, float)
    d = lows.size
    if method == "uniform":
        U = rng.random((n, d))
    elif method == "lhs":
        U = np.empty((n, d))
        for k in range(d):
            U[:, k] = (rng.permutation(n) + rng.random(n)) / n
    else:
        raise ValueError(f"sampling must be 'uniform' or 'lhs'; got {method!r}")
    return lows + (highs - lows) * U


# ---- the Burgers reference ---------------------------------------------------------------------

def burgers_reference(x, t, nu=NU, n_quad=100):
    """u(t, x) of u_t + u u_x = nu u_xx, u(0, x) = -sin(pi x), u(t, +-1) = 0, by Cole–Hopf:

        u = -∫ sin(π(x - η)) f(x - η) e^{-η²/4νt} dη / ∫ f(x - η) e^{-η²/4νt} dη,
        f(y) = exp(-cos(πy) / (2πν)),

    with η = 2√(νt) z and Gauss–Hermite nodes z (weight e^{-z²}). x and t broadcast together.
    100 nodes give the steepest slope, u_x(1.6037/π, 0) = -152.00516 (Basdevant et al., 1986),
    to 1e-9 (200 nodes agree to 1e-11; numpy's hermgauss overflows near 400)."""
    x, t = np.broadcast_arrays(np.asarray(x, float), np.asarray(t, float))
    scalar = x.ndim == 0
    x, t = x.reshape(-1) if scalar else x, t.reshape(-1) if scalar else t
    z, w = np.polynomial.hermite.hermgauss(n_quad)
    out = np.array(-np.sin(np.pi * x), dtype=float, ndmin=1)
    pos = t > 0
    xs, ts = x[pos][..., None], t[pos][..., None]
    y = xs - 2.0 * np.sqrt(nu * ts) * z
    logf = -np.cos(np.pi * y) / (2 * np.pi * nu)
    f = w * np.exp(logf - logf.max(axis=-1, keepdims=True))  # scaled: the ratio is unchanged
    out[pos] = -np.sum(np.sin(np.pi * y) * f, axis=-1) / np.sum(f, axis=-1)
    return float(out[0]) if scalar else out


# ---- the problems ------------------------------------------------------------------------------

class Problem:
    """Collocation points, data points and the loss of one example."""

    name = ""
    layers = ()
    n_f_default = 1000

    def network(self, backend="numpy", dtype="float64", seed=0):
        return MLP(list(self.layers), activation="tanh", backend=backend, dtype=dtype, seed=seed)

    def residual(self, net, Xf):
        raise NotImplementedError

    def loss(self, net):
        """Data term (mean squared misfit on the data points) + residual term (mean square)."""
        r = self.residual(net, self.Xf)
        return mse(net(self.Xu), self.Uu) + (r ** 2).mean()

    def error(self, net):
        """Relative L2 error of the network on the test points."""
        U = net.predict(self.X_test).reshape(-1)
        return float(np.linalg.norm(U - self.U_test) / np.linalg.norm(self.U_test))


class Poisson1D(Problem):
    """u'' = -π² sin(πx) on [-1, 1], u(±1) = 0; solution sin(πx)."""

    name, layers, n_f_default = "poisson1d", (1, 20, 20, 1), 64

    def __init__(self, n_f=None, seed=0, sampling="lhs"):
        rng = np.random.default_rng(seed)
        self.Xf = sample(n_f or self.n_f_default, [-1.0], [1.0], rng, sampling)
        self.source = -np.pi ** 2 * np.sin(np.pi * self.Xf)
        self.Xu, self.Uu = np.array([[-1.0], [1.0]]), np.zeros((2, 1))
        self.X_test = np.linspace(-1, 1, 201).reshape(-1, 1)
        self.U_test = np.sin(np.pi * self.X_test[:, 0])

    def residual(self, net, Xf):
        u, u_xx = net.derivatives(Xf, second=((0, 0),))
        return u_xx - self.source


class Poisson2D(Problem):
    """u_xx + u_yy = -2π² sin(πx) sin(πy) on the unit square, u = 0 on its boundary."""

    name, layers, n_f_default = "poisson2d", (2, 20, 20, 20, 1), 1000

    def __init__(self, n_f=None, seed=0, sampling="lhs", n_b=200):
        rng = np.random.default_rng(seed)
        self.Xf = sample(n_f or self.n_f_default, [0.0, 0.0], [1.0, 1.0], rng, sampling)
        x, y = self.Xf[:, :1], self.Xf[:, 1:]
        self.source = -2 * np.pi ** 2 * np.sin(np.pi * x) * np.sin(np.pi * y)
        s = rng.random(n_b)
        side = rng.integers(0, 4, n_b)
        self.Xu = np.stack([np.where(side == 0, 0.0, np.where(side == 1, 1.0, s)),
                            np.where(side == 2, 0.0, np.where(side == 3, 1.0, s))], axis=1)
        self.Uu = np.zeros((n_b, 1))
        g = np.linspace(0, 1, 51)
        gx, gy = np.meshgrid(g, g)
        self.X_test = np.stack([gx.ravel(), gy.ravel()], axis=1)
        self.U_test = np.sin(np.pi * gx.ravel()) * np.sin(np.pi * gy.ravel())

    def residual(self, net, Xf):
        u, u_xx, u_yy = net.derivatives(Xf, second=("xx", "yy"), names=("x", "y"))
        return u_xx + u_yy - self.source


class Burgers(Problem):
    """u_t + u u_x - (0.01/π) u_xx = 0, x in [-1, 1], t in [0, 1], u(0, x) = -sin(πx),
    u(t, ±1) = 0. Inputs are the columns (x, t). Raissi's setup: [2]+[20]*8+[1] tanh, N_u = 100
    initial and boundary points, N_f = 10,000 collocation points."""

    name, layers, n_f_default = "burgers", (2,) + (20,) * 8 + (1,), 10000

    def __init__(self, n_f=None, seed=0, sampling="lhs", n_u=100, nx=256, nt=100):
        rng = np.random.default_rng(seed)
        self.Xf = sample(n_f or self.n_f_default, [-1.0, 0.0], [1.0, 1.0], rng, sampling)
        # candidates as in Raissi's script: the initial line on the x grid, both boundaries on
        # the t grid; N_u of them drawn at random
        x, t = np.linspace(-1, 1, nx), np.linspace(0, 1, nt)
        initial = np.stack([x, np.zeros(nx)], axis=1)
        left = np.stack([-np.ones(nt), t], axis=1)
        right = np.stack([np.ones(nt), t], axis=1)
        candidates = np.concatenate([initial, left, right])
        values = np.concatenate([-np.sin(np.pi * x), np.zeros(2 * nt)])
        pick = rng.choice(len(candidates), size=n_u, replace=False)
        self.Xu, self.Uu = candidates[pick], values[pick].reshape(-1, 1)
        gx, gt = np.meshgrid(x, t)
        self.X_test = np.stack([gx.ravel(), gt.ravel()], axis=1)
        self._U_test = None

    @property
    def U_test(self):
        """The Cole–Hopf reference on the nt x nx test grid (computed when first asked for)."""
        if self._U_test is None:
            self._U_test = burgers_reference(self.X_test[:, 0], self.X_test[:, 1])
        return self._U_test

    def residual(self, net, Xf):
        u, u_x, u_t, u_xx = net.derivatives(Xf, first=("x", "t"), second=("xx",), names=("x", "t"))
        return u_t + u * u_x - NU * u_xx


def burgers_residual_recorded(net, Xf):
    """The Burgers residual by recording the backward pass (``bp.grad(create_graph=True)``)."""
    x = Tensor(Xf, requires_grad=True, backend=net.backend.name, dtype=net.dtype.name)
    u = net(x)
    du = grad(u.sum(), x, create_graph=True)
    u_x, u_t = du[:, 0:1], du[:, 1:2]
    u_xx = grad(u_x.sum(), x, create_graph=True)[:, 0:1]
    return u_t + u * u_x - NU * u_xx


def make(name, n_f=None, seed=0, sampling="lhs"):
    classes = {"poisson1d": Poisson1D, "poisson2d": Poisson2D, "burgers": Burgers}
    if name not in classes:
        raise ValueError(f"unknown problem {name!r}; valid: {', '.join(PROBLEMS)}")
    return classes[name](n_f=n_f, seed=seed, sampling=sampling)


def train(problem, net, adam_steps=1000, lbfgs_iters=1000, lr=1e-3, history=LBFGS_HISTORY, log=None):
    """Adam then L-BFGS (``history`` pairs kept) on ``problem.loss``; returns {"initial",
    "after_adam", "final", ...}."""
    def value():
        return float(problem.loss(net))

    out = {"initial": value()}
    start = time.perf_counter()
    if adam_steps > 0:
        trainer = Trainer(net, objective=problem.loss, optimizer=Adam(lr=lr))
        for step in range(adam_steps):
            loss = trainer.step(None, None)
            if log and (step + 1) % max(1, adam_steps // 5) == 0:
                log(f"  adam {step + 1}/{adam_steps}: loss {loss:.3e}")
    out["after_adam"] = value()
    out["lbfgs_iters"] = 0
    if lbfgs_iters > 0:
        result = LBFGS(history_size=history, max_iter=lbfgs_iters, tolerance_grad=1e-12,
                       tolerance_change=1e-15).minimize(
            net, lambda: _objective.value_and_grads(net, problem.loss))
        out["lbfgs_iters"] = result.n_iter
        if log:
            log(f"  l-bfgs: {result.n_iter} iterations, loss {result.loss:.3e} ({result.reason})")
    out["final"] = value()
    out["seconds"] = time.perf_counter() - start
    return out


DEFAULTS = {"poisson1d": (2000, 300), "poisson2d": (2000, 500), "burgers": (1000, 20000)}


def run(name, backend=None, adam_steps=None, lbfgs_iters=None, n_f=None, seed=0, sampling="lhs",
        log=print):
    """Builds, trains and evaluates one example; returns the training record plus "error"."""
    if backend is None:
        backend, why = default_backend()
        log(f"backend {backend!r}: {why}")
    adam_default, lbfgs_default = DEFAULTS[name]
    adam_steps = adam_default if adam_steps is None else adam_steps
    lbfgs_iters = lbfgs_default if lbfgs_iters is None else lbfgs_iters
    problem = make(name, n_f=n_f, seed=seed, sampling=sampling)
    net = problem.network(backend=backend, seed=seed)
    log(f"{name}: layers {list(problem.layers)} tanh, {len(problem.Xf)} collocation points, "
        f"{len(problem.Xu)} data points, backend {backend!r}, float64; "
        f"{adam_steps} Adam steps then up to {lbfgs_iters} L-BFGS iterations")
    out = train(problem, net, adam_steps, lbfgs_iters, log=log)
    out["error"] = problem.error(net)
    out["backend"] = backend
    log(f"loss {out['initial']:.3e} -> {out['after_adam']:.3e} (Adam) -> {out['final']:.3e}; "
        f"relative L2 error {out['error']:.3e} ({out['seconds']:.1f} s)")
    return out


__all__ = ["Burgers", "Poisson1D", "Poisson2D", "PROBLEMS", "burgers_reference",
           "burgers_residual_recorded", "default_backend", "lacks_taylor", "make", "run", "sample", "train"]
