"""The hooks ``fit``'s loop calls around every epoch: divergence, validation, schedules,
progress, early stopping, checkpoints.

The loop (``train._train``) runs one ``Trainer.epoch`` per epoch and records its loss; everything
else it does is one of these small objects, each called at the same points:

    start(loop)                   before the first epoch (a checkpoint is restored here)
    before_epoch(loop, epoch)     e.g. the schedule's lr for this epoch
    after_epoch(loop, epoch)      after the epoch's loss is recorded; True stops the loop
    diverged(loop, epoch, exc)    the epoch raised NonFiniteLossError
    finish(loop)                  after the last epoch (the best parameters put back)

``Loop`` holds what they share: the model, the trainer, the History, the row-order generator,
the early-stopping best and the progress bar's postfix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import _checks
from . import checkpoint as ckpt
from .step import NonFiniteLossError
from .tensor import Tensor, no_grad


@dataclass
class History:
    """What ``fit`` measured: per-epoch training loss (with the penalty), validation loss, lr."""

    loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    best_epoch: int | None = None
    stopped_epoch: int | None = None

    @property
    def epochs(self):
        return len(self.loss)


class EarlyStopping:
    """Stops when the validation loss has not improved by ``min_delta`` for ``patience`` epochs,
    and (``restore_best``) puts back the parameters of the best epoch."""

    def __init__(self, patience=10, min_delta=0.0, restore_best=True):
        self.patience = _checks.check_count(patience, "patience", 1)
        self.min_delta = _checks.check_rate(min_delta, "min_delta")
        self.restore_best = bool(restore_best)

    @classmethod
    def make(cls, early_stopping):
        if early_stopping is None or early_stopping is False:
            return None
        if isinstance(early_stopping, cls):
            return early_stopping
        if isinstance(early_stopping, dict):
            return cls(**early_stopping)
        return cls(patience=early_stopping)


class Loop:
    """The state of one ``fit`` the hooks share."""

    def __init__(self, net, trainer, order_rng, lr_schedule):
        self.net, self.trainer, self.order_rng = net, trainer, order_rng
        self.lr_schedule = lr_schedule
        self.history = History()
        self.start_epoch = 0
        self.best = (math.inf, None, None)  # (val_loss, epoch, parameters)
        self.stopper = None
        self.postfix = {}


def snapshot(net):
    """Host copies of the model's weights and biases (``set_params`` puts them back)."""
    return net.weights, net.biases


class Hook:
    """A hook that does nothing at every point; subclasses override what they need."""

    def start(self, loop):
        pass

    def before_epoch(self, loop, epoch):
        pass

    def after_epoch(self, loop, epoch):
        return False

    def diverged(self, loop, epoch, exc):
        pass

    def finish(self, loop):
        pass


class Divergence(Hook):
    """Keeps finite parameters: after every epoch the parameters are checked (``params_finite``,
    a ``FiniteCheck``), every 10 epochs a finite copy is kept, and a divergence puts the last
    finite parameters back and raises NonFiniteLossError naming the epoch."""

    def __init__(self, params_finite):
        self.params_finite = params_finite
        self.last_good = None

    def start(self, loop):
        self.last_good = snapshot(loop.net)  # finite: fit checked the parameters before training

    def diverged(self, loop, epoch, exc):
        if not self.params_finite():
            loop.net.set_params(*self.last_good)
        raise NonFiniteLossError(f"training diverged in epoch {epoch}: {exc}; the model keeps "
                                 "its last finite parameters (try a smaller lr)") from None

    def after_epoch(self, loop, epoch):
        if not self.params_finite():  # a finite loss, but the update overflowed
            loop.net.set_params(*self.last_good)
            raise NonFiniteLossError(
                f"training diverged in epoch {epoch}: the loss was finite but the update made "
                "parameters NaN or infinite; the model keeps its last finite parameters (try a "
                "smaller lr, l1 or l2)")
        if epoch % 10 == 0:
            self.last_good = snapshot(loop.net)  # finite: checked above
        return False


class Validation(Hook):
    """The validation loss (no penalty, no dropout) after every epoch, into ``history.val_loss``;
    with ``comm``, summed over every rank's share of the validation rows."""

    def __init__(self, X_val, Y_val, loss):
        self.X_val, self.Y_val, self.loss = X_val, Y_val, loss

    def after_epoch(self, loop, epoch):
        net, trainer, loss = loop.net, loop.trainer, self.loss
        X_val, Y_val = self.X_val, self.Y_val
        if callable(loss):
            with no_grad():
                val = loss(net(X_val, standardize=False), Tensor(Y_val, backend=net.backend)).item()
        elif trainer.dist is not None and trainer.dist.size > 1:  # the loss over every rank's rows
            val = (net.backend.loss(loss, net.forward(X_val), Y_val)[0] if X_val.shape[0]
                   else 0.0)
            val = trainer.dist.reduce_loss(val, *trainer.dist.val_layout, loss)
        else:
            val, _ = net.backend.loss(loss, net.forward(X_val), Y_val)
        loop.history.val_loss.append(float(val))
        loop.postfix["val_loss"] = f"{loop.history.val_loss[-1]:.4g}"
        return False


class Schedule(Hook):
    """The lr of every epoch from ``lr_schedule(epoch)`` (``first_lr``: the first, checked before
    training); a ReduceLROnPlateau also sees every epoch's History. With a per-step schedule
    (``Trainer.lr_at_step``) the trainer sets the lr itself and only ``observe`` runs here."""

    def __init__(self, lr_schedule, first_lr):
        self.lr_schedule, self.first_lr = lr_schedule, first_lr

    def before_epoch(self, loop, epoch):
        trainer = loop.trainer
        if trainer.lr_at_step is None:
            trainer.optimizer.lr = self.first_lr if epoch == 0 else _checks.check_rate(
                self.lr_schedule(epoch), "lr from lr_schedule")

    def after_epoch(self, loop, epoch):
        if hasattr(self.lr_schedule, "observe"):  # ReduceLROnPlateau
            self.lr_schedule.observe(loop.history)
        return False


class Progress(Hook):
    """The progress bar's postfix (loss, validation loss) after every epoch."""

    def __init__(self, bar):
        self.bar = bar

    def after_epoch(self, loop, epoch):
        self.bar.set_postfix(loop.postfix, refresh=False)
        return False


class EarlyStop(Hook):
    """Stops when the validation loss has not improved by ``min_delta`` for ``patience`` epochs
    (an ``EarlyStopping``), and puts back the best epoch's parameters at the end."""

    def __init__(self, stopper):
        self.stopper = stopper

    def start(self, loop):
        loop.stopper = self.stopper

    def after_epoch(self, loop, epoch):
        val = loop.history.val_loss[-1]
        best = loop.best
        if best[1] is None or val < best[0] - self.stopper.min_delta:
            loop.best = (val, epoch, snapshot(loop.net) if self.stopper.restore_best else None)
        elif epoch - best[1] >= self.stopper.patience:
            loop.history.stopped_epoch = epoch
            return True
        return False

    def finish(self, loop):
        if loop.best[1] is not None:
            loop.history.best_epoch = loop.best[1]
            if self.stopper.restore_best:
                loop.net.set_params(*loop.best[2])


class Checkpoint(Hook):
    """``resume``: restores a checkpoint before the first epoch (the loop then skips the epochs
    it covers): a ``checkpoint.Resume`` that ``check`` read before the model changed, or a path
    read and checked whole here before anything changes; ``path``: writes one every ``every``
    epochs and after the last (with comm, on rank 0 only: every rank holds the same state)."""

    def __init__(self, path, every, resume, epochs):
        self.path, self.every, self.resume, self.epochs = path, every, resume, epochs

    @staticmethod
    def check(path, resume, net, trainer, lr_schedule):
        """fit's checks, before the model changes: that a checkpoint can be written at ``path``
        (OSError naming it; with comm, on rank 0, the rank that writes), and the ``resume``
        checkpoint read whole and checked against this fit (ValueError naming it and what is
        wrong). Returns the ``checkpoint.Resume`` (or None) that ``start`` puts in place."""
        if path is not None and (trainer.dist is None or trainer.dist.root):
            ckpt.check_target(path)
        return None if resume is None else ckpt.read(resume, net, trainer, lr_schedule)

    def start(self, loop):
        if self.resume is not None:
            resume = self.resume
            if not isinstance(resume, ckpt.Resume):
                resume = ckpt.read(resume, loop.net, loop.trainer, loop.lr_schedule,
                                   loop.order_rng)
            loop.start_epoch, saved_best = resume.apply(loop.net, loop.trainer, loop.order_rng,
                                                        loop.history, loop.lr_schedule)
            if saved_best is not None:
                loop.best = saved_best

    def after_epoch(self, loop, epoch):
        dist = loop.trainer.dist
        if self.path is not None and (dist is None or dist.root) and (
                (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs):
            ckpt.save(self.path, loop.net, loop.trainer, loop.order_rng, epoch, loop.history,
                      loop.best if loop.stopper is not None else None, loop.lr_schedule)
        return False
