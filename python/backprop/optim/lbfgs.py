"""L-BFGS over flattened parameters, full batch, with a strong-Wolfe line search.

    opt = LBFGS([*net.parameters(), lam], history_size=50, max_iter=5000,
                line_search_fn="strong_wolfe")
    opt.step(closure)        # closure(): zero_grad, compute L, L.backward(), return L

    opt = LBFGS(lr=1, history_size=10, max_iter=100)           # over one MLP's arrays
    result = opt.minimize(net, closure)       # closure() -> loss, gradients in net.grads

The vectors (parameters, gradient, direction, the s/y history) are float64 arrays of the
model's backend (numpy for "numpy" and "cpu", CuPy for "cuda"); only scalars (dot products,
the loss) come back to the host. The algorithm is Nocedal & Wright's two-loop recursion
(Algorithm 7.4) with the initial scaling γ = sᵀy / yᵀy, and the line search is their
Algorithm 3.5/3.6 (bracketing and zoom by cubic interpolation), as PyTorch's LBFGS does it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._checks import check_rate
from ..backends import array_module
from ..step import NonFiniteLossError
from ..tensor.core import enable_grad
from .base import Optimizer


@dataclass
class LBFGSResult:
    n_iter: int = 0
    n_eval: int = 0
    loss: float = math.nan
    converged: bool = False
    reason: str = ""
    losses: list = field(default_factory=list)


class Flat:
    """Parameter arrays and their gradients as one float64 vector on the backend.

    ``grads``: a list of gradient arrays, or a callable that returns it (Tensors' gradients,
    which each backward makes anew)."""

    def __init__(self, params, grads):
        self.params = params
        self.grads = grads
        self.xp = array_module(self.params[0])
        self.sizes = [int(p.size) for p in self.params]

    def get(self, arrays):
        xp = self.xp
        return xp.concatenate([a.reshape(-1).astype(xp.float64) for a in arrays])

    def x(self):
        return self.get(self.params)

    def grad(self):
        return self.get(self.grads() if callable(self.grads) else self.grads)

    def set(self, x):
        start = 0
        for p, size in zip(self.params, self.sizes):
            p[...] = x[start:start + size].reshape(p.shape).astype(p.dtype)
            start += size


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimizer of the cubic through (x1, f1, g1) and (x2, f2, g2), within bounds."""
    xmin_bound, xmax_bound = bounds if bounds is not None else sorted((x1, x2))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    if d2_square >= 0:
        d2 = math.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        if math.isfinite(min_pos):
            return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def strong_wolfe(obj, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """Step length t along d with f(x+td) <= f + c1 t gtd and |∇f(x+td)·d| <= c2 |gtd|.

    obj(x, t, d) -> (loss, gradient) at x + t d. Returns (f_new, g_new, t, evaluations).
    """
    xp = array_module(d)
    d_norm = float(xp.abs(d).max())
    f_new, g_new = obj(x, t, d)
    ls_evals = 1
    gtd_new = float(xp.dot(g_new, d))
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > f + c1 * t * gtd or (ls_iter > 1 and f_new >= f_prev):
            bracket = [t_prev, t]
            bracket_f = [f_prev, f_new]
            bracket_g = [g_prev, g_new]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket = [t_prev, t]
            bracket_f = [f_prev, f_new]
            bracket_g = [g_prev, g_new]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                               bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, g_new = obj(x, t, d)
        ls_evals += 1
        gtd_new = float(xp.dot(g_new, d))
        ls_iter += 1
    if ls_iter == max_ls:
        bracket = [0.0, t]
        bracket_f = [f, f_new]
        bracket_g = [g, g_new]

    # zoom: shrink the bracket until a point satisfies both conditions
    insuf_progress = False
    low_pos, high_pos = (0, 1) if len(bracket) == 1 or bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
                               bracket[1], bracket_f[1], bracket_gtd[1])
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) \
                    else min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj(x, t, d)
        ls_evals += 1
        gtd_new = float(xp.dot(g_new, d))
        ls_iter += 1
        if f_new > f + c1 * t * gtd or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new, gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos] = bracket_g[low_pos]
                bracket_gtd[high_pos] = bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new, gtd_new
    t = bracket[low_pos]
    return bracket_f[low_pos], bracket_g[low_pos], t, ls_evals


_EPS = float(np.finfo(np.float64).eps)


class LBFGS(Optimizer):
    """Limited-memory BFGS, full batch (one step = one iteration with its line search).

    params: parameter Tensors (or groups) to minimize over with ``step(closure)``, as PyTorch's
        ``torch.optim.LBFGS``; None for ``minimize(net, closure)`` over one MLP's arrays.
    lr: the initial step length of each line search (1 is the natural one for L-BFGS; the first
        iteration starts from min(1, 1/||g||₁) · lr). history_size: the (s, y) pairs kept.
    max_iter: iterations per ``step``/``minimize`` call. max_eval: loss evaluations per call
        (default 1.25 max_iter). tolerance_grad: stop when max|g| <= it. tolerance_change: stop
        when the loss or the step changes by less. line_search (or PyTorch's name,
        ``line_search_fn``): "strong_wolfe" or None (a fixed step lr). The defaults differ from
        PyTorch's (history_size=100, max_iter=20, no line search): give them to compare.
    """

    name = "lbfgs"
    full_batch = True
    hyperparameters = ("lr", "history_size", "max_iter", "max_eval", "tolerance_grad",
                       "tolerance_change", "line_search")

    def __init__(self, params=None, lr=1.0, history_size=10, max_iter=100, max_eval=None,
                 tolerance_grad=1e-7, tolerance_change=1e-9, line_search="strong_wolfe", *,
                 line_search_fn="strong_wolfe"):
        if line_search_fn != "strong_wolfe":
            line_search = line_search_fn
        super().__init__(params, lr=lr, history_size=history_size, max_iter=max_iter,
                         max_eval=max_eval, tolerance_grad=tolerance_grad,
                         tolerance_change=tolerance_change, line_search=line_search)
        if len(self.param_groups) > 1:
            raise ValueError("LBFGS takes one parameter group (it minimizes over one vector)")
        self.steps = []  # (f, gtd, t, f_new, gtd_new) of every accepted line-search step
        self.result = None  # the LBFGSResult of the last step()

    def check_hyper(self, hyper):
        hyper["lr"] = check_rate(hyper["lr"], "lr")
        if hyper["lr"] == 0:
            raise ValueError("lr must be > 0 for L-BFGS (the first step length of each line "
                             "search); got 0")
        if not (isinstance(hyper["history_size"], int) and hyper["history_size"] >= 1):
            raise ValueError(f"history_size must be an integer >= 1; got {hyper['history_size']!r}")
        if not (isinstance(hyper["max_iter"], int) and hyper["max_iter"] >= 1):
            raise ValueError(f"max_iter must be an integer >= 1; got {hyper['max_iter']!r}")
        if hyper["max_eval"] is None:
            hyper["max_eval"] = hyper["max_iter"] * 5 // 4
        elif isinstance(hyper["max_eval"], bool) or not isinstance(hyper["max_eval"], int) \
                or hyper["max_eval"] < 1:
            raise ValueError(f"max_eval must be an integer >= 1 or None; got {hyper['max_eval']!r}")
        if hyper["line_search"] not in ("strong_wolfe", None):
            raise ValueError(f"line_search must be 'strong_wolfe' or None; got "
                             f"{hyper['line_search']!r}")
        hyper["tolerance_grad"] = check_rate(hyper["tolerance_grad"], "tolerance_grad")
        hyper["tolerance_change"] = check_rate(hyper["tolerance_change"], "tolerance_change")
        return hyper

    def __repr__(self):
        return (f"LBFGS(lr={self.lr}, history_size={self.history_size}, max_iter={self.max_iter}, "
                f"tolerance_grad={self.tolerance_grad}, tolerance_change={self.tolerance_change}, "
                f"line_search={self.line_search!r})")

    def step(self, closure, callback=None):
        """Up to ``max_iter`` iterations over the parameters; returns the first loss (as
        PyTorch's). ``closure()`` zeroes the gradients, computes the loss L, calls
        ``L.backward()`` and returns L (a scalar Tensor or a float). The parameters end at the
        best point the line searches accepted; a loss that becomes NaN or infinite raises
        ``NonFiniteLossError`` with the parameters of the last finite point. ``self.result`` is
        the LBFGSResult; ``callback(iteration, loss)`` runs after every iteration."""
        self._need_params("step")
        params = self.parameters()
        backend = self._backend

        def grads():
            return [p.grad if p.has_grad else backend.zeros(p.value.shape, p.value.dtype)
                    for p in params]

        def evaluate():
            with enable_grad():
                return float(closure())
        first = []

        def recorded():
            value = evaluate()
            if not first:
                first.append(value)
            return value
        self.result = self._run(Flat([p.value for p in params], grads), recorded, callback)
        if self.result.reason == "the loss is not finite":
            raise NonFiniteLossError(f"the loss is {self.result.loss} in L-BFGS iteration "
                                     f"{self.result.n_iter}; the parameters are those of the "
                                     "last finite point")
        return first[0]

    def minimize(self, net, closure, callback=None):
        """Runs up to max_iter iterations from the model's parameters; returns an LBFGSResult.

        closure() computes the full-batch loss at the current parameters, writes the gradients
        into ``net.grads`` and returns the loss (a float). The model ends at the best point the
        line searches accepted (the last finite one when the loss became NaN or infinite).
        callback(iteration, loss) runs after every iteration.
        """
        return self._run(Flat(net.params, net.grads), closure, callback)

    def _run(self, flat, closure, callback):
        """The L-BFGS iterations over ``flat`` (Nocedal & Wright's Algorithm 7.4)."""
        hp = self.param_groups[0] if self.param_groups else self.hyper()
        xp = flat.xp
        result = LBFGSResult()

        def evaluate():
            result.n_eval += 1
            return float(closure()), flat.grad()

        def obj(x0, t, d):
            flat.set(x0 + t * d)
            return evaluate()

        x = flat.x()
        loss, g = evaluate()
        result.loss = loss
        if not math.isfinite(loss):
            result.reason = "the loss is not finite"
            return result
        if float(xp.abs(g).max()) <= hp["tolerance_grad"]:
            result.converged, result.reason = True, "gradient below tolerance_grad"
            return result
        old_s, old_y, ro = [], [], []
        d = t = None
        g_prev = None
        H_diag = 1.0
        while True:
            result.n_iter += 1
            if result.n_iter == 1:
                d = -g
            else:
                y = g - g_prev
                s = d * t
                ys = float(xp.dot(y, s))
                # keep the pair when the curvature yᵀs is positive relative to the descent of the
                # step, -gᵀs (SciPy's L-BFGS-B test): a fixed floor such as 1e-10 stops every
                # update once the loss itself is that small, and the iterations stall
                if ys > _EPS * -gtd * t:
                    if len(old_s) == hp["history_size"]:
                        old_s.pop(0), old_y.pop(0), ro.pop(0)
                    old_s.append(s)
                    old_y.append(y)
                    ro.append(1.0 / ys)
                    H_diag = ys / float(xp.dot(y, y))
                q = -g
                al = [0.0] * len(old_s)
                for i in range(len(old_s) - 1, -1, -1):
                    al[i] = float(xp.dot(old_s[i], q)) * ro[i]
                    q = q - al[i] * old_y[i]
                d = q * H_diag
                for i in range(len(old_s)):
                    be_i = float(xp.dot(old_y[i], d)) * ro[i]
                    d = d + old_s[i] * (al[i] - be_i)
            g_prev = g
            loss_prev = loss
            t = (min(1.0, 1.0 / float(xp.abs(g).sum())) * hp["lr"] if result.n_iter == 1
                 else hp["lr"])
            gtd = float(xp.dot(g, d))
            if gtd > -hp["tolerance_change"]:
                result.n_iter -= 1
                result.converged, result.reason = True, "no descent direction left"
                flat.set(x)
                break
            if hp["line_search"] == "strong_wolfe":
                loss, g, t, _ = strong_wolfe(obj, x, t, d, loss, g, gtd)
                gtd_new = float(xp.dot(g, d))
                self.steps.append((loss_prev, gtd, t, loss, gtd_new))
            else:
                loss, g = obj(x, t, d)
            if not math.isfinite(loss):  # back to the last finite point
                flat.set(x)
                result.loss = loss
                result.reason = "the loss is not finite"
                break
            x = x + t * d
            flat.set(x)
            result.loss = loss
            result.losses.append(loss)
            if callback is not None:
                callback(result.n_iter, loss)
            if float(xp.abs(g).max()) <= hp["tolerance_grad"]:
                result.converged, result.reason = True, "gradient below tolerance_grad"
                break
            if float(xp.abs(d * t).max()) <= hp["tolerance_change"]:
                result.converged, result.reason = True, "step below tolerance_change"
                break
            if abs(loss - loss_prev) < hp["tolerance_change"]:
                result.converged, result.reason = True, "loss change below tolerance_change"
                break
            if result.n_iter >= hp["max_iter"]:
                result.reason = "max_iter reached"
                break
            if result.n_eval >= hp["max_eval"]:
                result.reason = "max_eval reached"
                break
        return result
