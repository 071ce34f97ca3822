"""The update rules: full-batch GD, SGD with momentum/Nesterov, Adam, AdamW.

Each class checks its hyper-parameters and updates one parameter array in place with the
backend's kernel (``sgd_update``, ``adam_update``), reading the hyper-parameters of the
parameter's group (``hyper``: a dict). The parameter lists, groups and state live in the base
class (``optim.base``).
"""

from __future__ import annotations

from .._checks import check_in, check_name, check_number, check_rate
from .base import Optimizer


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, in PyTorch's form:

        v = momentum v + g;  step = g + momentum v (nesterov) or v;  param -= lr step

    ``SGD(params=None, lr=1e-2, momentum=0, nesterov=False)``.
    """

    name = "sgd"
    hyperparameters = ("lr", "momentum", "nesterov")

    def __init__(self, params=None, lr=1e-2, momentum=0.0, nesterov=False):
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov)

    def check_hyper(self, hyper):
        hyper["lr"] = check_rate(hyper["lr"], "lr")
        hyper["momentum"] = check_in(hyper["momentum"], "momentum", 0.0, 1.0)
        if hyper["nesterov"] and hyper["momentum"] == 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        hyper["nesterov"] = bool(hyper["nesterov"])
        return hyper

    def slots(self, hyper):
        return ("velocity",) if hyper["momentum"] > 0 else ()

    def update(self, backend, param, grad, slots, step, hyper):
        backend._sgd_update(param, grad, slots.get("velocity"), hyper["lr"], hyper["momentum"],
                            hyper["nesterov"])


class GD(SGD):
    """Full-batch gradient descent: param -= lr dLoss/dparam, one step per epoch on all data."""

    name = "gd"
    full_batch = True
    hyperparameters = ("lr", "momentum", "nesterov")

    def __init__(self, params=None, lr=1e-2):
        super().__init__(params, lr=lr, momentum=0.0)


class Adam(Optimizer):
    """Adam (Kingma & Ba, Algorithm 1), the optimizer of Raissi's code:

        m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²;  param -= lr m̂ / (sqrt(v̂) + eps)
    with m̂ = m / (1-β1^t) and v̂ = v / (1-β2^t).

    ``Adam(params=None, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)``; ``betas=(β1, β2)`` as
    PyTorch spells it works too.
    """

    name = "adam"
    hyperparameters = ("lr", "beta1", "beta2", "eps")

    def __init__(self, params=None, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, *, betas=None):
        if betas is not None:
            beta1, beta2 = _pair(betas)
        super().__init__(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps)

    def check_hyper(self, hyper):
        hyper["lr"] = check_rate(hyper["lr"], "lr")
        hyper["beta1"] = check_in(hyper["beta1"], "beta1", 0.0, 1.0)
        hyper["beta2"] = check_in(hyper["beta2"], "beta2", 0.0, 1.0)
        eps = check_number(hyper["eps"], "eps")
        if not eps > 0:
            raise ValueError(f"eps must be a finite number > 0; got {hyper['eps']}")
        hyper["eps"] = eps
        return hyper

    def slots(self, hyper):
        return ("m", "v")

    def update(self, backend, param, grad, slots, step, hyper):
        backend._adam_update(param, grad, slots["m"], slots["v"], hyper["lr"], hyper["beta1"],
                             hyper["beta2"], hyper["eps"], step)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), in PyTorch's form:

        param -= lr wd param;  then Adam's update with the gradient (which has no decay term)

    ``AdamW(params=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)``. The decay
    runs on the Python side before the backend's ``adam_update`` kernel, so no fused native path
    knows AdamW: ``Trainer`` runs it kernel by kernel.
    """

    name = "adamw"
    hyperparameters = ("lr", "beta1", "beta2", "eps", "weight_decay")

    def __init__(self, params=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        beta1, beta2 = _pair(betas)
        Optimizer.__init__(self, params, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                           weight_decay=weight_decay)

    def check_hyper(self, hyper):
        hyper = super().check_hyper(hyper)
        hyper["weight_decay"] = check_rate(hyper["weight_decay"], "weight_decay")
        return hyper

    def update(self, backend, param, grad, slots, step, hyper):
        if hyper["weight_decay"]:
            param *= 1.0 - hyper["lr"] * hyper["weight_decay"]
        super().update(backend, param, grad, slots, step, hyper)


def _pair(betas):
    betas = tuple(betas)
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2); got {betas!r}")
    return betas


OPTIMIZERS = {"gd": GD, "sgd": SGD, "adam": Adam, "adamw": AdamW}


def get_optimizer(optimizer, lr=None):
    """An Optimizer from a name ("gd", "sgd", "adam", "adamw") and ``lr``, or the object itself."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    cls = OPTIMIZERS[check_name("optimizer", optimizer, tuple(OPTIMIZERS))]
    return cls() if lr is None else cls(lr=lr)
