"""Learning-rate schedules: callables epoch -> lr for ``fit(lr_schedule=...)``, and
ReduceLROnPlateau, which lowers the lr when the monitored loss stops improving."""

from __future__ import annotations

import math

from .._checks import check_in, check_name, check_number, check_rate


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
