"""Trainer: one model, one loss, one optimizer with its state; ``step(X, Y)`` is one step.

One training step on a batch (X, Y), in kernels:

    F = forward(X)                                (dense_forward per layer, dropout masks if any)
    value, G = loss(F, Y)                         (loss and dLoss/dF together)
    dW_l, db_l = backward(G)                      (dense_backward per layer)
    value += l1 Σ|W| + (l2/2) Σ W²;  dW += l1 sign(W) + l2 W     (weight_penalty, weights only)
    then backprop.step.finish_step: finite check, per-step lr, clipping, the optimizer's update

The gradients come from ``MLP.compute_gradients`` (a loss name), from the Tensor layer
(``backprop.objective``: a callable loss or objective), or are summed over MPI ranks
(``backprop.distributed``); every one of them ends in ``finish_step``.

A backend with a fused whole-step path (``make_trainer``) runs that same sequence over the
model's own buffers in one native call per step or per epoch of minibatches (the cpu backend), or
as one CUDA graph replay per step with the epoch's losses read back once (the cuda backend):
``Trainer(..., fused=None)`` uses it whenever it covers the configuration (no dropout, a built-in
optimizer), ``fused=False`` forces the kernel-by-kernel path, ``fused=True`` demands the fused one.
Both give the same numbers (tests/backends/test_cpu_backend.py and test_cuda_fused.py hold them
together).
"""

from __future__ import annotations

import math

import numpy as np

from . import _checks
from .distributed import Distributed
from .objective import loss_objective, value_and_grads
from .optim import GD, SGD, Adam, get_optimizer
from .step import NonFiniteLossError, finish_step, step_loss


def dropout_rates(dropout, n_hidden):
    """One dropout probability per hidden layer, each in [0, 1)."""
    rates = [dropout] * n_hidden if np.isscalar(dropout) else list(dropout)
    if len(rates) != n_hidden:
        raise ValueError(f"{len(rates)} dropout rates given for {n_hidden} hidden layers")
    for p in rates:
        if not (isinstance(p, (int, float, np.floating)) and 0 <= p < 1):
            raise ValueError(f"dropout rates must be numbers in [0, 1); got {p!r}")
    return [float(p) for p in rates]


class Trainer:
    """One model, one loss, one optimizer with its state: ``step(X, Y)`` is one training step.

    X and Y are arrays of the model's backend (checked by the caller). The step is the kernel
    sequence of this module's docstring, or the backend's fused path (see ``fused``).

    With ``comm`` (an MPI communicator; backprop.distributed) ``step`` and ``epoch`` take this
    rank's rows (of the batch; of the data, whose global rows are the ranks' rows in rank order),
    the gradient is reduced over the ranks between the gradient and the update, and the step
    runs on the kernel path; ``reduction``, ``grad_blocks`` and ``transport`` as in ``fit``.
    """

    def __init__(self, net, loss=None, optimizer="adam", lr=None, l1=0.0, l2=0.0, dropout=0.0,
                 seed=None, fused=None, objective=None, clip_grad_norm=None, lr_at_step=None,
                 comm=None, reduction="sum", grad_blocks=None, transport="auto"):
        self.net = net
        # clip_grad_norm: the gradients' global norm is capped before every update (kernel
        # path); lr_at_step: a callable step -> lr applied before every update
        self.clip_grad_norm = (None if clip_grad_norm is None
                               else _checks.check_rate(clip_grad_norm, "clip_grad_norm"))
        self.lr_at_step = lr_at_step
        if objective is not None and loss is not None:
            raise ValueError("Trainer: give a loss or an objective, not both")
        if objective is not None and not callable(objective):
            raise TypeError("objective must be a callable net -> scalar Tensor")
        if objective is None and loss is None:
            raise ValueError("Trainer needs a loss (a name or a callable (F, Y) -> scalar Tensor) "
                             "or an objective (a callable net -> scalar Tensor)")
        # a callable loss (F, Y) -> scalar Tensor, or an objective net -> scalar Tensor, runs on
        # the Tensor layer (backprop.objective); a loss name runs on the MLP's kernels
        self.objective = objective
        self.loss_fn = loss if callable(loss) else None
        self.custom = objective is not None or self.loss_fn is not None
        self.loss = self.loss_fn if self.custom else _checks.check_loss(loss)
        self.optimizer = get_optimizer(optimizer, lr)
        if self.optimizer.param_groups:
            raise ValueError(f"{type(self.optimizer).__name__} was made over parameter Tensors; "
                             "fit and Trainer take the rule alone (e.g. Adam(lr=1e-3)) and "
                             "update the model's own arrays: give one without parameters, or "
                             "train with opt.step() in your own loop")
        self.l1 = _checks.check_rate(l1, "l1")
        self.l2 = _checks.check_rate(l2, "l2")
        self.dropout = dropout_rates(dropout, net.n_layers - 1)
        if self.custom:
            if fused:
                raise ValueError("fused=True: a callable loss or objective runs on the Tensor layer")
            if any(self.dropout):
                raise ValueError("dropout is not available with a callable loss or objective")
        self.rng = np.random.default_rng(seed)
        self.state = self.optimizer.state(net.backend, net.params)
        # data-parallel (backprop.distributed): comm (MPI), or grad_blocks on one process; the
        # step runs on the kernel path, which has the hook between gradients and update
        self.dist = None
        if comm is not None or grad_blocks is not None or reduction != "sum":
            if self.custom:
                raise ValueError("comm/grad_blocks: a callable loss or objective is not supported")
            if fused:
                raise ValueError("fused=True: with comm or grad_blocks the step runs on the kernel "
                                 "path (the fused step has no hook between gradient and update)")
            fused = False
            self.dist = Distributed(comm, reduction, grad_blocks, transport)
        self.fused = False if self.custom else self._fused_choice(fused)
        self._native = None

    def _fused_choice(self, fused):
        """Whether steps run on the backend's fused path; None picks it whenever it applies."""
        missing = None
        if not hasattr(self.net.backend, "make_trainer"):
            missing = f"backend {self.net.backend.name!r} has no fused training step"
        elif any(self.dropout):
            missing = "the fused training step has no dropout"
        elif self.clip_grad_norm is not None:
            missing = "the fused training step has no gradient clipping"
        elif type(self.optimizer) not in (GD, SGD, Adam):  # a subclass may change the update
            missing = f"the fused training step does not know optimizer {type(self.optimizer).__name__}"
        if fused is None:
            return missing is None
        if fused and missing is not None:
            raise ValueError(f"fused=True: {missing}; use fused=None or False")
        return bool(fused)

    def native(self):
        """The backend's fused trainer over this model's buffers (built on first use)."""
        if self._native is None:
            net = self.net
            self._native = net.backend.make_trainer(net, self.loss, self.optimizer, self.state,
                                                    self.l1, self.l2)
        return self._native

    def host_masks(self, n):
        """Inverted-dropout masks M_l (0 or 1/(1-p)) for the hidden layers of n rows, as numpy
        arrays drawn from this trainer's RNG (None where p = 0), or None without dropout."""
        if not any(self.dropout):
            return None
        masks = []
        for p, width in zip(self.dropout, self.net.layers[1:-1]):
            if p == 0:
                masks.append(None)
                continue
            keep = self.rng.random((n, width)) >= p
            masks.append(keep / (1.0 - p))
        return masks

    def masks(self, n):
        """``host_masks(n)`` as arrays of the model's backend and dtype."""
        masks = self.host_masks(n)
        if masks is None:
            return None
        backend, dtype = self.net.backend, self.net.dtype
        return [None if M is None else backend.asarray(M, dtype) for M in masks]

    def step(self, X, Y):
        """One step on the batch (X, Y); returns the loss (with the penalty) before the update.

        A loss that is not finite raises NonFiniteLossError before the update, so the model keeps
        the parameters it had.
        """
        net = self.net
        if self.dist is not None:  # X, Y: this rank's rows of the global batch, in rank order
            with net.lock:
                self.dist.start_given(net, X.shape[0])
                n = X.shape[0]
                return self.dist.step(self, X, Y, self.dist.lo + np.arange(n), self.dist.n_global,
                                      self.dist.lo + np.arange(n))
        with net.lock:
            if self.fused:  # forward, backward, penalty and update in one native call
                self._set_step_lr()
                value = self.native().step(X, Y, self.optimizer.lr, self.state.step)
                self._count_updates([value])
                return value
            if self.custom:  # the Tensor layer: gradients into the model's buffers
                fn = self.objective if self.objective is not None else loss_objective(self.loss_fn, X, Y)
                value = value_and_grads(net, fn, self.l1, self.l2)
            else:
                value = step_loss(net.compute_gradients(X, Y, self.loss, self.l1, self.l2,
                                                        masks=self.masks(X.shape[0])))
            return self.finish(value)

    def finish(self, value, reduce=None):
        """The rest of the step once the gradients are in the model's buffers (``reduce``: the
        sum over ranks): ``backprop.step.finish_step`` with this trainer's per-step lr, clipping
        and optimizer state. Returns the step's loss."""
        return finish_step(self._update, self.net.grads, value, reduce=reduce,
                           before_update=self._set_step_lr, clip_grad_norm=self.clip_grad_norm)

    def _update(self):
        net = self.net
        self.state.apply(net.backend, net.params, net.grads)

    def _set_step_lr(self):
        """The per-step lr (``lr_at_step``), just before an update."""
        if self.lr_at_step is not None:
            self.optimizer.lr = _checks.check_rate(self.lr_at_step(self.state.step),
                                                   "lr from lr_schedule")

    def _count_updates(self, losses):
        """Adds the updates a fused call applied to the step count; raises on a non-finite loss.

        The one place the count follows a skipped step: the fused paths run the batches in order
        and stop at the first loss that is not finite, without applying that batch's update, so
        the updates applied are the losses before it. (The kernel path counts in
        ``OptimizerState.apply``, and raises before it on a non-finite loss.)
        """
        ran = len(losses)
        applied = ran - 1 if ran and not math.isfinite(losses[-1]) else ran
        self.state.step += applied
        if applied < ran:
            raise NonFiniteLossError(f"the loss is {losses[-1]}")

    def _check_order(self, order, n):
        """``order`` as a C-contiguous int64 numpy array of n row indices in [0, n)."""
        host = np.asarray(self.net.backend.to_numpy(order))
        if host.dtype.kind not in "iu":
            raise TypeError(f"order must be an array of integer row indices; got dtype {host.dtype}")
        if host.shape != (n,):
            raise ValueError(f"order must have shape ({n},), one index per row; got {host.shape}")
        if n and (int(host.min()) < 0 or int(host.max()) >= n):
            raise ValueError(f"order has row indices outside [0, {n - 1}]")
        return np.ascontiguousarray(host, dtype=np.int64)

    def epoch(self, X, Y, batch_size, order=None):
        """One pass over (X, Y) in minibatches of ``batch_size``; returns (losses, sizes).

        Batch i holds the rows ``order[i*b : (i+1)*b]`` of X and Y (``order`` None: the rows in
        their order), gathered batch by batch: the data is not copied as a whole. On the fused
        path the whole epoch is one native call.
        """
        n = X.shape[0]
        batch_size = _checks.check_count(batch_size, "batch_size", 1)
        if self.dist is not None:  # X, Y: this rank's shard; order: of the global rows
            if not getattr(self.dist, "in_fit", False):
                self.dist.start_given(self.net, n)
            if order is not None:
                order = self._check_order(order, self.dist.n_global)
            return self.dist.epoch(self, X, Y, batch_size, order)
        if order is not None:
            order = self._check_order(order, n)
        sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
        net = self.net
        with net.lock:
            if self.fused and self.lr_at_step is None:
                try:
                    values = self.native().epoch(X, Y, batch_size, order, self.optimizer.lr,
                                                 self.state.step)
                except KeyboardInterrupt as exc:  # stopped between batches: count what ran
                    self.state.step += getattr(exc, "updates", 0)
                    raise
                self._count_updates(values)
                return values.tolist(), sizes
            if order is not None:
                order = net.backend.asarray(order, np.int64)
            values = []
            for start in range(0, n, batch_size):
                if order is None:
                    Xb, Yb = X[start:start + batch_size], Y[start:start + batch_size]
                else:
                    rows = order[start:start + batch_size]
                    Xb, Yb = X[rows], Y[rows]
                values.append(self.step(Xb, Yb))
            return values, sizes
