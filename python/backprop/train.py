"""The training loop: ``fit`` checks everything, then runs epochs of ``Trainer`` steps.

``fit`` checks every argument before the model changes, prepares the data on the backend
(standardized when asked), agrees with the other ranks (with ``comm``), and runs the loop:
one ``Trainer.epoch`` per epoch (the step: ``backprop.trainer``, ``backprop.step``), then the
hooks of ``backprop.fit_hooks`` (divergence, validation, schedule, progress, early stopping,
checkpoints). L-BFGS trains through ``backprop.fit_lbfgs``.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from . import _checks
from .distributed import guard_fit, signature
from .fit_hooks import (Checkpoint, Divergence, EarlyStop, EarlyStopping, History, Loop,
                        Progress, Schedule, Validation)
from .fit_lbfgs import fit_mlp
from .model import MLP
from .optim import LBFGS
from .standardize import Standardizer
from .step import NonFiniteLossError, step_loss
from .trainer import Trainer, dropout_rates

__all__ = ["fit", "Trainer", "History", "EarlyStopping", "NonFiniteLossError", "FiniteCheck",
           "gradient_kernels", "step_loss", "dropout_rates", "epoch_loss"]


def gradient_kernels(net, X, Y, loss, l1=0.0, l2=0.0, masks=None):
    """The gradient half of one training step: ``net.compute_gradients`` (see there)."""
    return net.compute_gradients(X, Y, loss, l1, l2, masks)


def epoch_loss(values, sizes, loss):
    """The loss over an epoch's batches: summed for sse (a sum over samples), else size-weighted."""
    if loss == "sse":
        return float(sum(values))
    return float(np.dot(values, sizes) / sum(sizes))


def _custom_target(net, Y, n):
    """Targets for a callable loss: any float array with one row per sample, on the backend.

    A 1-D Y for a network of one output is refused: ``F - Y`` of F (n x 1) and Y (n,) broadcasts
    to n x n, a loss that looks fine and trains the wrong thing."""
    Y = _checks.as_matrix(Y, "Y")
    if Y.ndim == 0 or Y.shape[0] != n:
        raise ValueError(f"Y has {0 if Y.ndim == 0 else Y.shape[0]} rows but X has {n} rows")
    if Y.ndim == 1 and net.layers[-1] == 1:
        raise ValueError(f"Y has shape {Y.shape} but the network's output F is {n} x 1: with a "
                         "callable loss, F - Y would broadcast to n x n; give Y as a column "
                         "(Y.reshape(-1, 1))")
    _checks.check_finite(Y, "Y")
    return net.backend.asarray(Y, net.dtype)


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
    epochs = _checks.check_count(epochs, "epochs", 0)
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
        batch_size = _checks.check_count(batch_size, "batch_size", 1)
    if resume is not None and trainer.dist is not None:
        raise ValueError("resume with comm is not supported: resume on one process, or start "
                         "the distributed run afresh (checkpoints are written by rank 0)")
    if checkpoint is not None:
        checkpoint_every = _checks.check_count(checkpoint_every, "checkpoint_every", 1)
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
    # the checkpoint's folder takes a file; a resumed checkpoint is read whole and checked
    resume = Checkpoint.check(checkpoint, resume, net, trainer, lr_schedule)

    with net.lock:
        standardizer = None
        if standardize:
            standardizer = Standardizer().fit(_checks.check_inputs(X, net.layers[0]))
        X_dev = net.input_array(X, standardizer)
        n = X_dev.shape[0]
        Y_dev = _custom_target(net, Y, n) if callable(loss) else net.target_array(Y, n, loss)
        X_val = Y_val = None
        if validation_data is not None:
            X_val = net.input_array(validation_data[0], standardizer)
            Y_val = (_custom_target(net, validation_data[1], X_val.shape[0]) if callable(loss)
                     else net.target_array(validation_data[1], X_val.shape[0], loss))
        params_finite = FiniteCheck(net)
        if not params_finite():
            raise ValueError("the model's parameters contain NaN or Inf; set finite ones "
                             "(set_params) before fit")
        if trainer.dist is not None:  # the first collective: agree, take shards, rank 0's params
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
    """fit's loop over epochs, on checked arrays of the backend (with comm: this rank's rows):
    each epoch one ``Trainer.epoch``, then the hooks (backprop.fit_hooks) in their order."""
    checkpoint, checkpoint_every, resume, epochs = checkpointing
    loop = Loop(net, trainer, np.random.default_rng(seed), lr_schedule)
    hooks = [hook for hook in (
        Divergence(params_finite),
        Validation(X_val, Y_val, loss) if X_val is not None else None,
        Schedule(lr_schedule, first_lr) if lr_schedule is not None else None,
        Progress(epoch_iter) if verbose else None,
        EarlyStop(stopper) if stopper is not None else None,
        Checkpoint(checkpoint, checkpoint_every, resume, epochs)
        if checkpoint is not None or resume is not None else None) if hook is not None]
    n = X_dev.shape[0] if trainer.dist is None else trainer.dist.n_global
    for hook in reversed(hooks):  # a resumed checkpoint first: the others start from its state
        hook.start(loop)
    for epoch in epoch_iter:
        if epoch < loop.start_epoch:  # resumed: these ran before the checkpoint
            continue
        for hook in hooks:
            hook.before_epoch(loop, epoch)
        order = None
        if shuffle and batch_size < n:
            order = loop.order_rng.permutation(n).astype(np.int64, copy=False)
        try:
            values, sizes = trainer.epoch(X_dev, Y_dev, batch_size, order=order)
        except NonFiniteLossError as exc:
            for hook in hooks:
                hook.diverged(loop, epoch, exc)
            raise
        loop.history.loss.append(epoch_loss(values, sizes, loss))
        loop.history.lr.append(trainer.optimizer.lr)
        loop.postfix = {"loss": f"{loop.history.loss[-1]:.4g}"}
        if _after_epoch(hooks, loop, epoch):
            break
    for hook in hooks:
        hook.finish(loop)
    return loop.history


def _after_epoch(hooks, loop, epoch):
    """Runs the hooks' ``after_epoch`` in order until one says stop; returns whether one did."""
    for hook in hooks:
        if hook.after_epoch(loop, epoch):
            return True
    return False


MLP.training_loop = staticmethod(fit)
