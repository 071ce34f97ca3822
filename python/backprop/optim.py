"""Optimizers (full-batch GD, SGD with momentum/Nesterov, Adam) and learning-rate schedules.

An optimizer object holds hyper-parameters only; the per-parameter state (velocities, moments)
lives in an ``OptimizerState`` made for one model on one backend. The updates themselves are
the backend's in-place kernels ``sgd_update`` and ``adam_update``.
"""

from __future__ import annotations

import math

from ._checks import check_name, check_rate


class Optimizer:
    """Base class: ``lr`` is read at every step, so a schedule may change it between steps."""

    name = "optimizer"
    full_batch = False

    def __init__(self, lr):
        self.lr = check_rate(lr, "lr")

    def state(self, backend, params):
        """The per-parameter state this optimizer needs, allocated on ``backend``."""
        return OptimizerState(self, backend, params)

    def update(self, backend, param, grad, slots, step):
        raise NotImplementedError

    def slots(self):
        """Names of the per-parameter buffers (each shaped like its parameter)."""
        return ()

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, in PyTorch's form:

        v = momentum v + g;  step = g + momentum v (nesterov) or v;  param -= lr step
    """

    name = "sgd"

    def __init__(self, lr=1e-2, momentum=0.0, nesterov=False):
        super().__init__(lr)
        self.momentum = check_rate(momentum, "momentum")
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1); got {momentum}")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        self.nesterov = bool(nesterov)

    def slots(self):
        return ("velocity",) if self.momentum > 0 else ()

    def update(self, backend, param, grad, slots, step):
        backend.sgd_update(param, grad, slots.get("velocity"), self.lr, self.momentum, self.nesterov)


class GD(SGD):
    """Full-batch gradient descent: param -= lr dLoss/dparam, one step per epoch on all data."""

    name = "gd"
    full_batch = True

    def __init__(self, lr=1e-2):
        super().__init__(lr, momentum=0.0)


class Adam(Optimizer):
    """Adam (Kingma & Ba, Algorithm 1), the optimizer of Raissi's code:

        m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²;  param -= lr m̂ / (sqrt(v̂) + eps)
    with m̂ = m / (1-β1^t) and v̂ = v / (1-β2^t).
    """

    name = "adam"

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(lr)
        for key, value in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= float(value) < 1:
                raise ValueError(f"{key} must be in [0, 1); got {value}")
        if not float(eps) > 0:
            raise ValueError(f"eps must be > 0; got {eps}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def slots(self):
        return ("m", "v")

    def update(self, backend, param, grad, slots, step):
        backend.adam_update(param, grad, slots["m"], slots["v"], self.lr, self.beta1,
                            self.beta2, self.eps, step)


OPTIMIZERS = {"gd": GD, "sgd": SGD, "adam": Adam}


def get_optimizer(optimizer, lr=None):
    """An Optimizer from a name ("gd", "sgd", "adam") and ``lr``, or the object itself."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    cls = OPTIMIZERS[check_name("optimizer", optimizer, tuple(OPTIMIZERS))]
    return cls() if lr is None else cls(lr=lr)


class OptimizerState:
    """Zero-initialized slots (one buffer per slot per parameter) and the step counter."""

    def __init__(self, optimizer, backend, params):
        self.optimizer = optimizer
        self.step = 0
        self.slots = [{name: backend.zeros(p.shape, p.dtype) for name in optimizer.slots()}
                      for p in params]

    def apply(self, backend, params, grads):
        """One update of every parameter with its gradient, in place."""
        self.step += 1
        for param, grad, slots in zip(params, grads, self.slots):
            self.optimizer.update(backend, param, grad, slots, self.step)


# ---- learning-rate schedules: callables epoch -> lr, given to fit(lr_schedule=...) -------

def piecewise_constant(boundaries, values):
    """lr = values[i] for boundaries[i-1] <= epoch < boundaries[i] (len(values) = len(boundaries)+1).

    Raissi's schedule, 10,000 steps at each of 1e-3 ... 1e-6:
    ``piecewise_constant([10000, 20000, 30000], [1e-3, 1e-4, 1e-5, 1e-6])``.
    """
    boundaries, values = list(boundaries), [check_rate(v) for v in values]
    if len(values) != len(boundaries) + 1:
        raise ValueError("piecewise_constant needs one more value than boundaries")
    if boundaries != sorted(boundaries):
        raise ValueError("piecewise_constant boundaries must be increasing")

    def schedule(epoch):
        for boundary, value in zip(boundaries, values):
            if epoch < boundary:
                return value
        return values[-1]

    return schedule


def exponential_decay(lr, rate, every=1):
    """lr · rate^(epoch / every)."""
    lr, rate = check_rate(lr), check_rate(rate, "rate")
    return lambda epoch: lr * rate ** (epoch / every)


def cosine_decay(lr, epochs, final_lr=0.0):
    """Cosine annealing from ``lr`` to ``final_lr`` over ``epochs`` epochs."""
    lr, final_lr = check_rate(lr), check_rate(final_lr)
    return lambda epoch: final_lr + 0.5 * (lr - final_lr) * (1 + math.cos(math.pi * min(epoch, epochs) / epochs))
