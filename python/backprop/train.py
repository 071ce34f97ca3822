"""The training loop: minibatches, optimizer steps, regularization, validation, early stopping.

One training step on a batch (X, Y), in kernels:

    F = forward(X)                                (dense_forward per layer, dropout masks if any)
    value, G = loss(F, Y)                         (loss and dLoss/dF together)
    dW_l, db_l = backward(G)                      (dense_backward per layer)
    value += l1 Σ|W| + (l2/2) Σ W²;  dW += l1 sign(W) + l2 W     (weight_penalty, weights only)
    param -= update(grad)                         (sgd_update / adam_update)

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
import sys
from dataclasses import dataclass, field

import numpy as np

from . import _checks
from .distributed import guard_fit
from .optim import GD, SGD, Adam, get_optimizer


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the model keeps its last finite parameters."""


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
        self.patience = _count(patience, "patience", 1)
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


def dropout_rates(dropout, n_hidden):
    """One dropout probability per hidden layer, each in [0, 1)."""
    rates = [dropout] * n_hidden if np.isscalar(dropout) else list(dropout)
    if len(rates) != n_hidden:
        raise ValueError(f"{len(rates)} dropout rates given for {n_hidden} hidden layers")
    for p in rates:
        if not (isinstance(p, (int, float, np.floating)) and 0 <= p < 1):
            raise ValueError(f"dropout rates must be numbers in [0, 1); got {p!r}")
    return [float(p) for p in rates]


def gradient_kernels(net, X, Y, loss, l1=0.0, l2=0.0, masks=None):
    """The gradient half of one training step, as kernels of ``net.backend``.

        F = forward(X);  value, G = loss(F, Y);  G = act_out'(F) ⊙ G;  dW_l, db_l = backward(G)
        value_l = l1 Σ|W_l| + (l2/2) Σ W_l²;  dW_l += l1 sign(W_l) + l2 W_l     (when l1 or l2)

    X and Y are arrays of the backend (checked by the caller); the gradients land in the model's
    buffers (``net.grads``). Returns the loss terms [data loss, penalty_0, penalty_1, ...] (no
    penalty terms when l1 = l2 = 0) exactly as the backend's kernels returned them: nothing is
    read back to the host here, so a backend can record this sequence (the cuda backend captures
    it in a CUDA graph). The step's loss is their sum, added in this order.
    """
    value, _ = net._loss_and_grad(X, Y, loss, masks=masks)
    values = [value]
    if l1 != 0 or l2 != 0:
        values += [net.backend._weight_penalty(W, dW, l1, l2) for W, dW in zip(net._W, net._dW)]
    return values


def step_loss(values):
    """The step's loss from ``gradient_kernels``' terms: a float, added in their order."""
    total = float(values[0])
    for value in values[1:]:
        total += float(value)
    return total


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
            from .distributed import Distributed
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
        elif type(self.optimizer) not in (GD, SGD, Adam):
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
            with net._lock:
                self.dist.start_given(net, X.shape[0])
                n = X.shape[0]
                return self.dist.step(self, X, Y, self.dist.lo + np.arange(n), self.dist.n_global,
                                      self.dist.lo + np.arange(n))
        with net._lock:
            if self.custom:  # the Tensor layer: gradients into the model's buffers, then the update
                from .objective import loss_objective, value_and_grads
                fn = self.objective if self.objective is not None else loss_objective(self.loss_fn, X, Y)
                value = value_and_grads(net, fn, self.l1, self.l2)
                if not math.isfinite(value):
                    raise NonFiniteLossError(f"the loss is {value}")
                self._before_update()
                self.state.apply(net.backend, net.params, net.grads)
                return value
            if self.fused:  # forward, backward, penalty and update in one native call
                self._before_update()
                value = self.native().step(X, Y, self.optimizer.lr, self.state.step)
                self._count_updates([value])
                return value
            value = step_loss(gradient_kernels(net, X, Y, self.loss, self.l1, self.l2,
                                               masks=self.masks(X.shape[0])))
            if not math.isfinite(value):
                raise NonFiniteLossError(f"the loss is {value}")
            self._before_update()
            self.state.apply(net.backend, net.params, net.grads)
            return value

    def _before_update(self):
        """The per-step lr (``lr_at_step``) and gradient clipping, just before an update."""
        if self.lr_at_step is not None:
            self.optimizer.lr = _checks.check_rate(self.lr_at_step(self.state.step),
                                                   "lr from lr_schedule")
        if self.clip_grad_norm is not None and not self.fused:
            from .optim import clip_grad_norm
            clip_grad_norm(self.net.backend, self.net.grads, self.clip_grad_norm)

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
        batch_size = _count(batch_size, "batch_size", 1)
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
        with net._lock:
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


def _epoch_loss(values, sizes, loss):
    """The loss over an epoch's batches: summed for sse (a sum over samples), else size-weighted."""
    if loss == "sse":
        return float(sum(values))
    return float(np.dot(values, sizes) / sum(sizes))


def _custom_target(net, Y, n):
    """Targets for a callable loss: any float array with one row per sample, on the backend."""
    Y = _checks.as_matrix(Y, "Y")
    if Y.ndim == 0 or Y.shape[0] != n:
        raise ValueError(f"Y has {0 if Y.ndim == 0 else Y.shape[0]} rows but X has {n} rows")
    _checks.check_finite(Y, "Y")
    return net.backend.asarray(Y, net.dtype)


def _snapshot(net):
    return net.weights, net.biases


class FiniteCheck:
    """Called, says whether every parameter of ``net`` is finite; cheap enough for every epoch.

    Small host models (numpy and cpu backends) gather their parameters into one buffer and test
    it in one pass (4 µs for Raissi's 22 arrays, where a test per array costs 30 µs);
    others test each array on the backend and read back one flag.
    """

    GATHER_LIMIT = 1 << 16  # entries; above this the per-array tests cost little in comparison

    def __init__(self, net):
        self.params = net.params
        self.flat = None
        dtypes = {p.dtype for p in self.params}
        total = sum(int(p.size) for p in self.params)
        if (total <= self.GATHER_LIMIT and len(dtypes) == 1
                and all(type(p) is np.ndarray and p.flags.c_contiguous for p in self.params)):
            self.flat = [p.reshape(-1) for p in self.params]  # views of the parameters
            self.buf = np.empty(total, dtypes.pop())
            self.mask = np.empty(total, bool)

    def __call__(self):
        if self.flat is not None:
            np.concatenate(self.flat, out=self.buf)
            return bool(np.isfinite(self.buf, out=self.mask).all())
        ok = True
        for p in self.params:
            ok = ok & np.isfinite(p).all()
        return bool(ok)


def _count(value, name, minimum):
    """``value`` as an int >= minimum (an integer-valued number), else a ValueError."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= minimum
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _progress_bar(epochs):
    """tqdm over the epochs; to a file or pipe (not a terminal) it writes a bounded amount."""
    from tqdm.auto import tqdm
    options = {}
    isatty = getattr(sys.stderr, "isatty", None)
    to_terminal = bool(isatty()) if callable(isatty) else False
    if not to_terminal and "notebook" not in getattr(tqdm, "__module__", ""):
        # every 10 s at most, and at most about 100 updates however long the fit: a log file
        # gets a few lines, not one rewrite per epoch
        options = {"mininterval": 10.0, "miniters": max(1, math.ceil(epochs / 100))}
    return tqdm(range(epochs), desc="fit", unit="epoch", **options)


@guard_fit
def fit(net, X, Y, loss="mse", optimizer="adam", lr=1e-3, epochs=100, batch_size=None,
        l1=0.0, l2=0.0, dropout=0.0, validation_data=None, early_stopping=None, shuffle=True,
        verbose=False, lr_schedule=None, standardize=False, seed=None, fused=None,
        lr_schedule_per="epoch", clip_grad_norm=None, checkpoint=None, checkpoint_every=1,
        resume=None, *, comm=None, shard="take", reduction="sum", grad_blocks=None,
        transport="auto"):
    """Trains ``net`` on (X, Y) and returns a History.

    Training continues from the model's current parameters: calling fit again trains further
    (the optimizer's state — momentum, Adam's moments and step count — starts afresh at each
    call; a ``Trainer`` keeps it across calls).

    X, Y: arrays or array-likes (lists, pandas Series/DataFrames, objects with ``__array__``).
    loss: "sse", "mse", "cross_entropy" (Y as labels or one-hot) or "bce"; or a callable
        loss(F, Y) -> scalar Tensor of the Tensors F = net(X_batch) and Y_batch (any float Y with
        one row per sample), run on the Tensor layer (backprop.objective).
    optimizer: "gd" (full batch), "sgd", "adam", or an object from ``backprop.optim``;
        ``lr`` applies to a name (an object keeps its own). "lbfgs" or a ``backprop.optim.LBFGS``
        trains full batch with L-BFGS, one epoch per iteration (``backprop.lbfgs.fit_mlp``).
    epochs: passes over the data. batch_size: None means the full batch (one step per epoch).
    l1, l2: penalties on the weights, l1 Σ|W| + (l2/2) Σ W², added to the loss.
    dropout: inverted-dropout drop probability for the hidden layers (one number, or one per
        hidden layer); applied during fit only.
    validation_data: (X_val, Y_val); its loss (no penalty, no dropout) is recorded per epoch.
    early_stopping: a patience in epochs, a dict of EarlyStopping's options or an EarlyStopping;
        needs validation_data; restores the parameters of the best epoch.
    lr_schedule: callable epoch -> lr, called at the start of every epoch (see backprop.optim);
        with ``lr_schedule_per="step"`` a callable step -> lr called before every update (step
        counts the updates of this fit from 0). A ``backprop.optim.ReduceLROnPlateau`` starts
        at the optimizer's lr and sees every epoch's (validation) loss.
    checkpoint, checkpoint_every: write the training state (backprop.checkpoint) to this
        path, atomically, after every ``checkpoint_every`` epochs and after the last one.
    resume: a checkpoint path: continue that run (same arguments) from the epoch after the
        one it saved, to the same parameters, bit for bit, as the uninterrupted run.
    clip_grad_norm: scale the gradients so that their global norm is at most this, before
        every update (runs kernel by kernel).
    standardize: fit a Standardizer on X and attach it to the model (applied at predict too).
    shuffle: visit the rows in a new random order every epoch (each minibatch gathers its rows).
    seed: seeds shuffling and dropout masks.
    fused: None runs each epoch on the backend's fused path when it has one and it covers the
        options (the cpu and cuda backends, no dropout); False forces the kernel-by-kernel path.
    verbose: show a progress bar (tqdm); to a file or pipe it writes a few lines, not one per epoch.
    comm: an MPI communicator (mpi4py): data-parallel training, the same steps as one process on
        the global data (README "More than one machine (MPI)", backprop.distributed).
        shard="take": every rank passes the whole data and trains on its contiguous part;
        "given": every rank passes its own rows (the global data is their concatenation in rank
        order). reduction="sum" (one Allreduce per step) or "fixed" (bit-reproducible: per-block
        partial gradients added in block order; grad_blocks blocks, default the number of ranks).
        grad_blocks=B without comm: one process computing the same blocked sum. transport (cuda):
        "auto", "mpi" (CUDA-aware), "nccl" or "host". Progress bars show on rank 0 only.

    Every argument is checked before the model changes: a call that raises on bad input leaves
    the model as it was. If the loss becomes NaN or infinite, or an update makes a parameter
    NaN or infinite, fit raises NonFiniteLossError naming the epoch and leaves the model with
    finite parameters (those of the step before, or the last finite ones it saw, at most 10
    epochs back).
    """
    from .lbfgs import LBFGS, fit_mlp
    if isinstance(optimizer, LBFGS) or optimizer == "lbfgs":  # full batch, backprop.lbfgs
        unused = {"batch_size": batch_size is not None, "dropout": bool(np.any(dropout)),
                  "early_stopping": early_stopping not in (None, False),
                  "lr_schedule": lr_schedule is not None, "checkpoint": checkpoint is not None,
                  "resume": resume is not None, "clip_grad_norm": clip_grad_norm is not None,
                  "fused": bool(fused), "a callable loss": callable(loss)}
        unused = [name for name, given in unused.items() if given]
        if unused:
            raise ValueError(f"optimizer 'lbfgs' (full batch, its own line search) does not "
                             f"take {', '.join(unused)}")
        return fit_mlp(net, X, Y, loss, optimizer, lr, epochs, l1, l2, validation_data,
                       standardize, verbose)
    # ---- every check first: the model changes only after all of them passed ----------
    loss = loss if callable(loss) else _checks.check_loss(loss)
    epochs = _count(epochs, "epochs", 0)
    lr_schedule_per = _checks.check_name("lr_schedule_per", lr_schedule_per, ("epoch", "step"))
    trainer = Trainer(net, loss, optimizer, lr=lr, l1=l1, l2=l2, dropout=dropout, seed=seed,
                      fused=fused, clip_grad_norm=clip_grad_norm,
                      lr_at_step=lr_schedule if lr_schedule_per == "step" else None,
                      comm=comm, reduction=reduction, grad_blocks=grad_blocks,
                      transport=transport)
    if trainer.dist is not None:
        shard = _checks.check_name("shard", shard, ("take", "given"))
        verbose = verbose and trainer.dist.rank == 0  # progress and logs from rank 0 only
        if standardize and shard == "given" and trainer.dist.size > 1:
            raise ValueError("standardize=True with shard='given' would fit different statistics "
                             "on every rank: standardize with global statistics before fit, or "
                             "use shard='take'")
    if trainer.optimizer.full_batch and batch_size is not None:
        raise ValueError("optimizer 'gd' is full-batch gradient descent: leave batch_size=None "
                         "or use 'sgd' for minibatches")
    if batch_size is not None:
        batch_size = _count(batch_size, "batch_size", 1)
    if resume is not None and trainer.dist is not None:
        raise ValueError("resume with comm is not supported: resume on one process, or start "
                         "the distributed run afresh (checkpoints are written by rank 0)")
    if checkpoint is not None:
        checkpoint_every = _count(checkpoint_every, "checkpoint_every", 1)
    stopper = EarlyStopping.make(early_stopping)
    if stopper is not None and validation_data is None:
        raise ValueError("early_stopping needs validation_data")
    if validation_data is not None and (not isinstance(validation_data, (tuple, list))
                                        or len(validation_data) != 2):
        raise TypeError("validation_data must be a pair (X_val, Y_val)")
    if lr_schedule is not None and not callable(lr_schedule):
        raise TypeError("lr_schedule must be a callable epoch -> lr")
    first_lr = None
    if hasattr(lr_schedule, "bind"):  # ReduceLROnPlateau: starts at the optimizer's lr
        lr_schedule.bind(trainer.optimizer.lr)
    if lr_schedule is not None and epochs > 0:
        first_lr = _checks.check_rate(lr_schedule(0), "lr from lr_schedule")

    with net._lock:
        standardizer = None
        if standardize:
            from .standardize import Standardizer
            standardizer = Standardizer().fit(_checks.check_inputs(X, net.layers[0]))
        X_dev = net._input(X, standardizer)
        n = X_dev.shape[0]
        Y_dev = _custom_target(net, Y, n) if callable(loss) else net._target(Y, n, loss)
        X_val = Y_val = None
        if validation_data is not None:
            X_val = net._input(validation_data[0], standardizer)
            Y_val = (_custom_target(net, validation_data[1], X_val.shape[0]) if callable(loss)
                     else net._target(validation_data[1], X_val.shape[0], loss))
        params_finite = FiniteCheck(net)
        if not params_finite():
            raise ValueError("the model's parameters contain NaN or Inf; set finite ones "
                             "(set_params) before fit")
        if trainer.dist is not None:  # the first collective: agree, take shards, rank 0's params
            from .distributed import signature
            X_dev, Y_dev, X_val, Y_val, seed = trainer.dist.begin(
                net, X_dev, Y_dev, X_val, Y_val, shard, signature(
                    net, trainer, loss, epochs, batch_size, shuffle, seed, lr_schedule,
                    early_stopping), seed)
            trainer.rng = np.random.default_rng(seed)
            trainer.dist.in_fit = True
            n = trainer.dist.n_global
        batch_size = n if batch_size is None else min(batch_size, n)
        epoch_iter = _progress_bar(epochs) if verbose else range(epochs)

        # ---- training -------------------------------------------------------------------
        if standardizer is not None:
            net.standardizer = standardizer
        try:
            return _train(net, trainer, X_dev, Y_dev, X_val, Y_val, loss, batch_size, shuffle,
                          seed, lr_schedule, first_lr, stopper, epoch_iter, verbose, params_finite,
                          (checkpoint, checkpoint_every, resume, epochs))
        finally:
            if verbose:
                epoch_iter.close()


def _train(net, trainer, X_dev, Y_dev, X_val, Y_val, loss, batch_size, shuffle, seed,
           lr_schedule, first_lr, stopper, epoch_iter, verbose, params_finite,
           checkpointing=(None, 1, None, 0)):
    """fit's loop over epochs, on checked arrays of the backend (with comm: this rank's rows)."""
    n = X_dev.shape[0] if trainer.dist is None else trainer.dist.n_global
    order_rng = np.random.default_rng(seed)
    history = History()
    best = (math.inf, None, None)  # (val_loss, epoch, parameters)
    checkpoint, checkpoint_every, resume, epochs = checkpointing
    start_epoch = 0
    if resume is not None:
        from . import checkpoint as ckpt
        start_epoch, saved_best = ckpt.restore(resume, net, trainer, order_rng, history,
                                               lr_schedule)
        best = saved_best if saved_best is not None else best
    last_good = _snapshot(net)  # finite: fit checked the parameters before training
    for epoch in epoch_iter:
        if epoch < start_epoch:  # resumed: these ran before the checkpoint
            continue
        if lr_schedule is not None and trainer.lr_at_step is None:
            trainer.optimizer.lr = first_lr if epoch == 0 else _checks.check_rate(
                lr_schedule(epoch), "lr from lr_schedule")
        order = None
        if shuffle and batch_size < n:
            order = order_rng.permutation(n).astype(np.int64, copy=False)
        try:
            values, sizes = trainer.epoch(X_dev, Y_dev, batch_size, order=order)
        except NonFiniteLossError as exc:
            if not params_finite():
                net.set_params(*last_good)
            raise NonFiniteLossError(f"training diverged in epoch {epoch}: {exc}; the model "
                                     "keeps its last finite parameters (try a smaller lr)") from None
        if not params_finite():  # a finite loss, but the update overflowed
            net.set_params(*last_good)
            raise NonFiniteLossError(
                f"training diverged in epoch {epoch}: the loss was finite but the update made "
                "parameters NaN or infinite; the model keeps its last finite parameters (try a "
                "smaller lr, l1 or l2)")
        history.loss.append(_epoch_loss(values, sizes, loss))
        history.lr.append(trainer.optimizer.lr)
        postfix = {"loss": f"{history.loss[-1]:.4g}"}
        if X_val is not None and callable(loss):
            from .tensor import Tensor, no_grad
            with no_grad():
                val = loss(net(X_val), Tensor(Y_val, backend=net.backend)).item()
            history.val_loss.append(float(val))
            postfix["val_loss"] = f"{history.val_loss[-1]:.4g}"
        elif X_val is not None:
            if trainer.dist is not None and trainer.dist.size > 1:  # the loss over every rank's rows
                val = (net.backend.loss(loss, net.forward(X_val), Y_val)[0] if X_val.shape[0]
                       else 0.0)
                val = trainer.dist.reduce_loss(val, *trainer.dist.val_layout, loss)
            else:
                F_val = net.forward(X_val)
                val, _ = net.backend.loss(loss, F_val, Y_val)
            history.val_loss.append(float(val))
            postfix["val_loss"] = f"{history.val_loss[-1]:.4g}"
        if hasattr(lr_schedule, "observe"):  # ReduceLROnPlateau
            lr_schedule.observe(history)
        if verbose:
            epoch_iter.set_postfix(postfix, refresh=False)
        if epoch % 10 == 0:
            last_good = _snapshot(net)  # finite: checked above
        if stopper is not None:
            val = history.val_loss[-1]
            if best[1] is None or val < best[0] - stopper.min_delta:
                best = (val, epoch, _snapshot(net) if stopper.restore_best else None)
            elif epoch - best[1] >= stopper.patience:
                history.stopped_epoch = epoch
                break
        # with comm every rank holds the same state: rank 0 alone writes the checkpoint
        if checkpoint is not None and (trainer.dist is None or trainer.dist.root) and (
                (epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
            from . import checkpoint as ckpt
            ckpt.save(checkpoint, net, trainer, order_rng, epoch, history,
                      best if stopper is not None else None, lr_schedule)
    if stopper is not None and best[1] is not None:
        history.best_epoch = best[1]
        if stopper.restore_best:
            net.set_params(*best[2])
    return history
