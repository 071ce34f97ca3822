"""Optimizers (full-batch GD, SGD with momentum/Nesterov, Adam) and learning-rate schedules.

An optimizer object holds hyper-parameters only; the per-parameter state (velocities, moments)
lives in an ``OptimizerState`` made for one model on one backend. The updates themselves are
the backend's in-place kernels ``sgd_update`` and ``adam_update``.
"""

from __future__ import annotations

import math
import signal
import threading

from ._checks import check_in, check_name, check_number, check_rate


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
        self.momentum = check_in(momentum, "momentum", 0.0, 1.0)
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        self.nesterov = bool(nesterov)

    def slots(self):
        return ("velocity",) if self.momentum > 0 else ()

    def update(self, backend, param, grad, slots, step):
        backend._sgd_update(param, grad, slots.get("velocity"), self.lr, self.momentum, self.nesterov)


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
        self.beta1 = check_in(beta1, "beta1", 0.0, 1.0)
        self.beta2 = check_in(beta2, "beta2", 0.0, 1.0)
        self.eps = check_number(eps, "eps")
        if not self.eps > 0:
            raise ValueError(f"eps must be a finite number > 0; got {eps}")

    def slots(self):
        return ("m", "v")

    def update(self, backend, param, grad, slots, step):
        backend._adam_update(param, grad, slots["m"], slots["v"], self.lr, self.beta1,
                             self.beta2, self.eps, step)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), in PyTorch's form:

        param -= lr wd param;  then Adam's update with the gradient (which has no decay term)

    The decay runs on the Python side before the backend's ``adam_update`` kernel, so no
    fused native path knows AdamW: ``Trainer`` runs it kernel by kernel.
    """

    name = "adamw"

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        betas = tuple(betas)
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2); got {betas!r}")
        super().__init__(lr, betas[0], betas[1], eps)
        self.weight_decay = check_rate(weight_decay, "weight_decay")

    def update(self, backend, param, grad, slots, step):
        if self.weight_decay:
            param *= 1.0 - self.lr * self.weight_decay
        super().update(backend, param, grad, slots, step)


OPTIMIZERS = {"gd": GD, "sgd": SGD, "adam": Adam, "adamw": AdamW}


def get_optimizer(optimizer, lr=None):
    """An Optimizer from a name ("gd", "sgd", "adam", "adamw") and ``lr``, or the object itself."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    cls = OPTIMIZERS[check_name("optimizer", optimizer, tuple(OPTIMIZERS))]
    return cls() if lr is None else cls(lr=lr)


class deferred_sigint:
    """A context manager that holds back Ctrl-C (SIGINT) until the end of its block.

    In the main thread it installs a handler that only records the signal, and on leaving the
    block puts the previous handler back and hands it the recorded signal (Python's default one
    raises KeyboardInterrupt there). Off the main thread, or when the previous handler was not
    installed from Python, it does nothing: signals are delivered to the main thread only.
    """

    __slots__ = ("previous", "received")

    def __enter__(self):
        self.previous, self.received = None, None
        if threading.current_thread() is not threading.main_thread():
            return self
        previous = signal.getsignal(signal.SIGINT)
        if previous is None:
            return self
        try:
            signal.signal(signal.SIGINT, self._hold)
        except (ValueError, OSError):  # not the main interpreter
            return self
        self.previous = previous
        return self

    def _hold(self, signum, frame):
        self.received = frame

    def __exit__(self, *exc):
        previous = self.previous
        if previous is None:
            return False
        self.previous = None
        signal.signal(signal.SIGINT, previous)
        if self.received is not None:
            frame, self.received = self.received, None
            if callable(previous):
                previous(signal.SIGINT, frame)
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)
        return False


class OptimizerState:
    """Zero-initialized slots (one buffer per slot per parameter) and the step counter.

    ``step`` counts the updates applied (Adam's t of the last update). It grows here, in
    ``apply``, on the kernel path, and in ``Trainer._count_updates`` after a fused call.
    """

    def __init__(self, optimizer, backend, params):
        self.optimizer = optimizer
        self.step = 0
        self.slots = [{name: backend.zeros(p.shape, p.dtype) for name in optimizer.slots()}
                      for p in params]

    def apply(self, backend, params, grads):
        """One update of every parameter with its gradient, in place, all or nothing.

        Ctrl-C during the update is held back until every array has moved (``deferred_sigint``),
        so an interrupt never leaves some parameters one step ahead of the others.
        """
        with deferred_sigint():
            self.step += 1
            for param, grad, slots in zip(params, grads, self.slots):
                self.optimizer.update(backend, param, grad, slots, self.step)


# ---- learning-rate schedules: callables epoch -> lr, given to fit(lr_schedule=...) -------

def piecewise_constant(boundaries, values):
    """lr = values[i] for boundaries[i-1] <= epoch < boundaries[i] (len(values) = len(boundaries)+1).

    Raissi's schedule, 10,000 steps at each of 1e-3 ... 1e-6:
    ``piecewise_constant([10000, 20000, 30000], [1e-3, 1e-4, 1e-5, 1e-6])``.
    """
    boundaries = [check_number(b, "boundary") for b in boundaries]
    values = [check_rate(v) for v in values]
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
    every = check_number(every, "every")
    if every <= 0:
        raise ValueError(f"every must be > 0; got {every}")
    return lambda epoch: lr * rate ** (epoch / every)


def cosine_decay(lr, epochs, final_lr=0.0):
    """Cosine annealing from ``lr`` to ``final_lr`` over ``epochs`` epochs."""
    lr, final_lr = check_rate(lr), check_rate(final_lr)
    epochs = check_number(epochs, "epochs")
    if epochs <= 0:
        raise ValueError(f"cosine_decay needs epochs > 0; got {epochs}")
    return lambda epoch: final_lr + 0.5 * (lr - final_lr) * (1 + math.cos(math.pi * min(epoch, epochs) / epochs))


def clip_grad_norm(backend, grads, max_norm):
    """Scales every gradient by max_norm / ||g|| when the global norm ||g|| (all gradients as
    one vector) exceeds max_norm, in place; returns ||g|| before clipping."""
    total = 0.0
    for g in grads:
        total += float((g * g).sum())
    total = math.sqrt(total)
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total


class ReduceLROnPlateau:
    """A schedule that divides the lr by 1/``factor`` when the monitored loss has not improved
    (by a relative ``threshold``) for more than ``patience`` epochs, never below ``min_lr``.

    Give it to ``fit(..., lr_schedule=ReduceLROnPlateau(...))``: fit starts it at the
    optimizer's lr (unless ``lr`` is given) and shows it every epoch's losses. ``monitor``:
    "val_loss", "loss", or "auto" (the validation loss when there is validation data).
    """

    def __init__(self, factor=0.1, patience=10, min_lr=0.0, threshold=1e-4, monitor="auto",
                 lr=None):
        self.factor = check_in(factor, "factor", 0.0, 1.0, low_open=True)
        if not (isinstance(patience, int) and patience >= 0):
            raise ValueError(f"patience must be an integer >= 0; got {patience!r}")
        self.patience = patience
        self.min_lr = check_rate(min_lr, "min_lr")
        self.threshold = check_rate(threshold, "threshold")
        self.monitor = check_name("monitor", monitor, ("auto", "loss", "val_loss"))
        self.lr = None if lr is None else check_rate(lr)
        self.best = math.inf
        self.bad_epochs = 0

    def bind(self, lr):
        """Starts at ``lr`` when no lr was given (fit passes the optimizer's)."""
        if self.lr is None:
            self.lr = check_rate(lr)

    def __call__(self, epoch):
        if self.lr is None:
            raise ValueError("ReduceLROnPlateau has no lr yet: give lr=... or use it in fit")
        return self.lr

    def observe(self, history):
        """Takes the last epoch's loss from a History and lowers the lr on a plateau."""
        use_val = self.monitor == "val_loss" or (self.monitor == "auto" and history.val_loss)
        if use_val and not history.val_loss:
            raise ValueError("ReduceLROnPlateau(monitor='val_loss') needs validation_data")
        value = history.val_loss[-1] if use_val else history.loss[-1]
        self.step(value)

    def step(self, value):
        if value < self.best * (1 - self.threshold) if self.best > 0 else value < self.best:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.lr = max(self.lr * self.factor, self.min_lr)
            self.bad_epochs = 0


from .lbfgs import LBFGS  # noqa: E402  (L-BFGS, full batch; see backprop.lbfgs)
