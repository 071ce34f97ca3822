"""Data-parallel training over MPI: every rank holds a shard of the data, every step's gradient
is reduced over the ranks, every rank applies the same update.

    fit(net, X, Y, ..., comm=MPI.COMM_WORLD)            # shard="take": each rank takes its rows
    fit(net, X_mine, Y_mine, ..., comm=comm, shard="given")  # each rank passes its own rows

One step on a global batch (the rows ``order[s:s+b]`` of the global data, drawn from one
permutation that every rank draws from the same seed), on rank r holding the n_r of its rows:

    local gradient g_r and loss L_r over the n_r rows (the backend's kernels, no penalty)
    buffer = [w_r g_r (every dW, db, flattened), w_r L_r]           one preallocated flat array
    Allreduce(buffer, SUM)                                           ONE collective per step
    dW, db, L = unpack(buffer);  dW += l1 sign(W) + l2 W;  L += penalty   (once, after the sum)
    param -= update(dW, db)                                          the same on every rank

The weight w_r. For a loss that is a mean over the samples of the batch (mse, cross_entropy, bce;
mse and bce also average over the k outputs, which cancels below), the backend's local gradient
is g_r = (1/n_r) Σ_{i∈r} ∇ℓ_i. The gradient of the loss over the global batch of N = Σ_r n_r rows is

    ∇L = (1/N) Σ_i ∇ℓ_i = Σ_r (n_r/N) · (1/n_r) Σ_{i∈r} ∇ℓ_i = Σ_r (n_r/N) g_r,

so w_r = n_r/N. For sse, a sum over samples, ∇L = Σ_r g_r and w_r = 1. The same weights give the
global loss value. The l1/l2 penalty is not part of g_r (it depends on the weights only, which
are the same everywhere) and is added once after the reduction, in the order a single process
adds it.

``reduction="fixed"`` (bit-reproducible): the global data is cut into ``grad_blocks`` = B
contiguous blocks of rows (block k holds the global rows [k·N_data//B, (k+1)·N_data//B)), and
every rank holds whole blocks. A step computes one partial gradient per block (the block's rows
of the batch, in batch order, weighted by n_k/N as above), the ranks exchange the partials with
one Allgatherv (data movement only, no arithmetic), and every rank adds them in block order
0, 1, ..., B-1. The result depends on B but not on the number of ranks: a run on P ranks is bit
for bit the run of one process with ``fit(..., grad_blocks=B)`` (any P that divides the blocks
among ranks, P <= B), and every rank holds the same bits. It is not bit-identical to a plain
single-process fit (which computes dW = AᵀG over the whole batch in one product) unless B = 1.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import threading
import time
import traceback

import numpy as np

from ._checks import check_count, check_name
from .backends import array_module
from .transport import LocalComm, Transport, mpi_dtype
from .step import NonFiniteLossError, step_loss

REDUCTIONS = ("sum", "fixed")
SHARDS = ("take", "given")
TRANSPORTS = ("auto", "mpi", "host", "nccl")


class DistributedError(RuntimeError):
    """Raised on every rank together when a rank's input failed its checks (before training)."""


# ---- faults: a rank that raises takes every rank down, with the error printed -----------------

_stage = threading.local()  # .agreed: whether the input agreement of the running fit has happened


def _error_record(exc):
    return f"{type(exc).__name__}: {exc}"


# The launcher forwards each rank's output through a pipe. MPI_Abort makes it kill every rank, and
# what is still in a pipe then is lost: the message goes out, and is given this long to be read,
# before the abort.
ABORT_FORWARD_SECONDS = 1.0
# mpich's MPI_Abort returns once it has asked the launcher to end the job. The rank then waits to
# be killed rather than run on (an exit of its own can race the launcher's kill); if nothing ends
# it by then, it exits.
ABORT_WAIT_SECONDS = 30.0


def abort(comm, exc, where="fit"):
    """Prints the exception with the rank and ends every rank (MPI_Abort); never returns."""
    rank = comm.Get_rank()
    sys.stdout.flush()
    sys.stderr.write(f"backprop: rank {rank} of {comm.Get_size()} failed in distributed {where}; "
                     f"aborting every rank:\n")
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    sys.stderr.flush()
    time.sleep(ABORT_FORWARD_SECONDS)
    comm.Abort(1)
    time.sleep(ABORT_WAIT_SECONDS)
    os._exit(1)


@contextlib.contextmanager
def abort_on_error(comm, where="training"):
    """Any exception inside the block (other than one every rank raises together) ends every
    rank with the error printed, instead of leaving the others waiting in a collective. With one
    rank the exception is raised as usual."""
    try:
        yield
    except (DistributedError,):
        raise
    except BaseException as exc:  # noqa: B902 - Ctrl-C on one rank too
        if isinstance(exc, NonFiniteLossError):  # decided on reduced values: every rank raises it
            raise
        if comm.Get_size() == 1:  # no other rank waits: the exception itself
            raise
        abort(comm, exc, where)


def abort_on_uncaught(comm):
    """Makes an exception that nothing catches end every rank (``abort``: the traceback printed,
    then MPI_Abort), as ``python -m mpi4py`` does, instead of leaving the other ranks waiting in
    a collective while this one waits in MPI's finalize. Installed by every distributed Trainer
    and fit with more than one rank (once per communicator; the previous hook is kept for
    exceptions raised outside the ranks' training)."""
    if comm.Get_size() == 1 or getattr(sys.excepthook, "backprop_comm", None) is comm:
        return

    def hook(exc_type, exc, tb):
        abort(comm, exc, "training (an exception nothing caught)")
    hook.backprop_comm = comm
    sys.excepthook = hook


def guard_fit(fit):
    """Wraps ``fit``: with ``comm``, an exception raised before the ranks agreed on their input is
    sent to every rank in the agreement (so all raise it together), one raised after it aborts
    every rank (MPI_Abort) with the traceback printed (with one rank, it is raised as usual)."""

    @functools.wraps(fit)
    def wrapper(*args, **kwargs):
        comm = kwargs.get("comm")
        if comm is None:
            return fit(*args, **kwargs)
        previous = getattr(_stage, "agreed", None)
        _stage.agreed = False
        try:
            return fit(*args, **kwargs)
        except BaseException as exc:
            if not _stage.agreed:  # the others wait in the agreement: tell them, then raise
                _stage.agreed = True
                try:
                    agree(comm, _error_record(exc), None)
                except DistributedError:
                    pass
                raise
            if isinstance(exc, (DistributedError, NonFiniteLossError)) or comm.Get_size() == 1:
                raise  # every rank raises it together, or no other rank waits
            abort(comm, exc, "fit")
        finally:
            _stage.agreed = previous
    return wrapper


def data_digest(arrays):
    """A SHA-256 digest (hex) of host arrays' shapes, dtypes and bytes (None entries count as
    absent): what the ranks compare to check that they were given the same data."""
    digest = hashlib.sha256()
    for a in arrays:
        if a is None:
            digest.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        digest.update(repr((a.shape, str(a.dtype))).encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def agree(comm, error, record):
    """One allgather of (error or None, record) from every rank; raises DistributedError on every
    rank if any rank failed, or if the records (the configuration) differ. Returns the records."""
    _stage.agreed = True
    got = comm.allgather((error, record))
    failed = [(r, e) for r, (e, _) in enumerate(got) if e is not None]
    if failed:
        text = "; ".join(f"rank {r}: {e}" for r, e in failed)
        raise DistributedError(f"distributed fit stopped before training: {text}")
    return [rec for _, rec in got]


# ---- the distributed step ---------------------------------------------------------------------

def _bounds(n, parts):
    """Boundaries of ``parts`` contiguous near-equal ranges of n rows."""
    return [n * k // parts for k in range(parts + 1)]


class Distributed:
    """The distributed half of a Trainer: layout of the shards, the flat buffers, the step."""

    def __init__(self, comm=None, reduction="sum", grad_blocks=None, transport="auto"):
        self.comm = LocalComm() if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        abort_on_uncaught(self.comm)
        self.reduction = check_name("reduction", reduction, REDUCTIONS)
        self.transport_kind = check_name("transport", transport, TRANSPORTS)
        if grad_blocks is not None:
            grad_blocks = check_count(grad_blocks, "grad_blocks", 1)
            if self.reduction != "fixed":
                raise ValueError("grad_blocks applies to reduction='fixed'")
        if self.reduction == "fixed":
            grad_blocks = self.size if grad_blocks is None else grad_blocks
            if grad_blocks < self.size:
                raise ValueError(f"reduction='fixed' needs grad_blocks >= the number of ranks "
                                 f"({self.size}); got {grad_blocks}")
        self.blocks = grad_blocks
        self.started = False
        self.n_global = self.lo = self.n_local = None
        self.transport = None
        self.reduce_seconds = 0.0  # time spent in the step's collective (bench)

    @property
    def root(self):
        """Whether this is rank 0, the rank that saves, writes checkpoints and logs."""
        return self.rank == 0

    # -- layout --
    def owned_blocks(self):
        """The blocks [k0, k1) this rank holds (reduction='fixed')."""
        B, P, r = self.blocks, self.size, self.rank
        return B * r // P, B * (r + 1) // P

    def take_range(self, n):
        """Rows [lo, hi) of n global rows that this rank takes (shard='take')."""
        return self._take_range_of(self.rank, n)

    def _take_range_of(self, r, n):
        if self.reduction == "fixed":  # whole blocks
            bb = _bounds(n, self.blocks)
            B, P = self.blocks, self.size
            return bb[B * r // P], bb[B * (r + 1) // P]
        b = _bounds(n, self.size)
        return b[r], b[r + 1]

    def set_layout(self, counts):
        """The global rows are the ranks' rows in rank order (counts: rows per rank). With
        reduction='fixed' every rank must hold whole blocks; checked for every rank from the
        counts that every rank knows, so every rank raises the same error together."""
        counts = [int(c) for c in counts]
        self.n_global, self.lo, self.n_local = sum(counts), sum(counts[:self.rank]), counts[self.rank]
        if self.reduction == "fixed":
            bb = _bounds(self.n_global, self.blocks)
            B, P = self.blocks, self.size
            for r in range(P):
                k0, k1 = B * r // P, B * (r + 1) // P
                lo = sum(counts[:r])
                if bb[k0] != lo or bb[k1] != lo + counts[r]:
                    raise DistributedError(
                        f"reduction='fixed': rank {r} holds global rows [{lo}, {lo + counts[r]}) "
                        f"but must hold the whole blocks {k0}..{k1 - 1}, rows [{bb[k0]}, {bb[k1]}) "
                        f"of {self.n_global} rows in {B} blocks (use shard='take', or give each "
                        "rank those rows)")
            self.block_bounds = np.asarray(bb, np.int64)

    # -- start: parameters from rank 0 --
    def broadcast_params(self, net):
        """Every parameter from rank 0 (one Bcast of one flat buffer)."""
        if self.size == 1:
            return
        params = net.params
        xp = array_module(params[0])
        if xp is np:
            flat = np.concatenate([p.reshape(-1) for p in params])
        else:  # a device model: through host memory (once per fit)
            xp.cuda.get_current_stream().synchronize()
            flat = np.concatenate([xp.asnumpy(p).reshape(-1) for p in params])
        self.comm.Bcast([flat, mpi_dtype(flat.dtype)], root=0)
        o = 0
        for p in params:
            p[...] = flat[o:o + p.size].reshape(p.shape) if xp is np else xp.asarray(
                flat[o:o + p.size].reshape(p.shape))
            o += p.size

    def _buffers(self, net):
        grads = net.grads
        xp = array_module(grads[0])
        self.xp = xp
        self.grads = grads
        self.S = sum(int(g.size) for g in grads) + 1  # + the loss value
        dtype = grads[0].dtype
        parts = 1 if self.reduction == "sum" else self.owned_blocks()[1] - self.owned_blocks()[0]
        self.send = xp.zeros(parts * self.S, dtype)
        self.recv = xp.zeros((self.blocks if self.reduction == "fixed" else 1) * self.S, dtype)
        self.total = self.recv if self.reduction == "sum" else xp.zeros(self.S, dtype)
        self.transport = Transport(self.comm, xp, dtype, self.transport_kind)
        if self.reduction == "fixed":
            B, P = self.blocks, self.size
            self.counts = [(B * (r + 1) // P - B * r // P) * self.S for r in range(P)]

    def _pack(self, out, scale, value):
        o = 0
        for g in self.grads:
            view = out[o:o + g.size].reshape(g.shape)
            if self.xp is np:
                np.multiply(g, scale, out=view)
            else:
                view[...] = g * scale
            o += g.size
        out[o] = value * scale if scale != 1.0 else value

    def _partial(self, trainer, X, Y, rows, masks, N, out):
        """The weighted local gradient and loss of the batch rows ``rows`` (local indices into X,
        Y) into ``out``; zeros when there are none."""
        net = trainer.net
        n = len(rows)
        if n == 0:
            out[...] = 0
            return
        backend = net.backend
        if n == X.shape[0] and np.array_equal(rows, np.arange(n)):
            Xp, Yp = X, Y
        else:
            idx = backend.asarray(np.asarray(rows, np.int64), np.int64) if self.xp is not np else rows
            Xp, Yp = X[idx], Y[idx]
        local_masks = None
        if masks is not None:
            local_masks = [None if M is None else backend.asarray(M[rows], net.dtype) for M in masks]
        value = net.compute_gradients(Xp, Yp, trainer.loss, 0.0, 0.0, masks=local_masks)[0]
        scale = 1.0 if trainer.loss == "sse" else n / N  # the weight w of the module docstring
        self._pack(out, scale, value)

    def _global_masks(self, trainer, N):
        """Dropout masks of the whole global batch, drawn from the shared RNG exactly as one
        process draws them, as host arrays: each rank takes its rows."""
        return trainer.host_masks(N)

    def step(self, trainer, X, Y, pos, N, global_rows=None):
        """One step on this rank's rows of a global batch of N rows.

        X, Y: the rank's rows of the batch (backend arrays); pos: their positions in the global
        batch (numpy ints, increasing); global_rows: their global row indices (reduction='fixed').
        Returns the step's loss (reduced, with the penalty), the same on every rank.
        """
        net = trainer.net
        if self.transport is None:
            self._buffers(net)
        pos = np.asarray(pos, np.int64)
        masks = self._global_masks(trainer, N)
        if masks is not None:
            masks = [None if M is None else M[pos] for M in masks]
        everything = np.arange(len(pos))
        if self.reduction == "sum":
            self._partial(trainer, X, Y, everything, masks, N, self.send)
        else:
            k0, k1 = self.owned_blocks()
            block = np.searchsorted(self.block_bounds, np.asarray(global_rows), side="right") - 1
            for j, k in enumerate(range(k0, k1)):
                self._partial(trainer, X, Y, everything[block == k], masks, N,
                              self.send[j * self.S:(j + 1) * self.S])

        def reduce(_):  # the sum over ranks, then the penalty once: the step's loss
            return self._reduce(trainer)
        return trainer.finish(None, reduce=reduce)

    def _reduce(self, trainer):
        """Sums the packed partial gradients and losses over the ranks into the model's
        gradient buffers, adds the penalty once, and returns the step's loss."""
        net = trainer.net
        t0 = time.perf_counter()
        if self.reduction == "sum":
            self.transport.allreduce(self.send, self.recv)
            self.reduce_seconds += time.perf_counter() - t0
        else:
            self.transport.allgatherv(self.send, self.recv, self.counts)
            self.reduce_seconds += time.perf_counter() - t0
            total, S = self.total, self.S
            total[...] = self.recv[:S]
            for k in range(1, self.blocks):  # block order: the same sum on every rank, any P
                total += self.recv[k * S:(k + 1) * S]
        total = self.total
        o = 0
        for g in self.grads:
            g[...] = total[o:o + g.size].reshape(g.shape)
            o += g.size
        values = [total[o]]
        if trainer.l1 != 0 or trainer.l2 != 0:
            values += [net.backend._weight_penalty(W, dW, trainer.l1, trainer.l2)
                       for W, dW in zip(net.W, net.dW)]
        return step_loss(values)

    def epoch(self, trainer, X, Y, batch_size, order=None):
        """One pass over the global data in global batches; X, Y are this rank's rows (global
        rows [lo, lo + n_local)); ``order`` is a permutation of the N global rows, the same on
        every rank. Returns (losses, global batch sizes), the same on every rank."""
        N, lo, n = self.n_global, self.lo, self.n_local
        g = np.arange(N, dtype=np.int64) if order is None else np.asarray(order, np.int64)
        if g.shape != (N,):
            raise ValueError(f"order must have shape ({N},), one index per global row")
        mine = (g >= lo) & (g < lo + n)
        values, sizes = [], []
        with trainer.net.lock:
            for start in range(0, N, batch_size):
                gb, mb = g[start:start + batch_size], mine[start:start + batch_size]
                pos = np.nonzero(mb)[0]
                rows = gb[pos] - lo
                if len(rows) == n and np.array_equal(rows, np.arange(n)):
                    Xb, Yb = X, Y
                else:
                    idx = rows if self.xp_of(X) is np else trainer.net.backend.asarray(rows, np.int64)
                    Xb, Yb = X[idx], Y[idx]
                values.append(self.step(trainer, Xb, Yb, pos, len(gb), gb[pos]))
                sizes.append(len(gb))
        return values, sizes

    @staticmethod
    def xp_of(array):
        return array_module(array)

    def reduce_loss(self, value, n_local, n_global, loss):
        """A loss over this rank's n_local rows of n_global, reduced to the global loss: the same
        float on every rank (allgather, then added in rank order)."""
        weight = 1.0 if loss == "sse" else (n_local / n_global if n_global else 0.0)
        part = float(value) * weight if n_local else 0.0
        total = 0.0
        for v in self.comm.allgather(part):
            total += v
        return total

    # -- the start of a distributed fit, after every local check passed --
    def begin(self, net, X, Y, X_val, Y_val, shard, signature, seed):
        """Agrees with every rank (one allgather: each rank's check result and configuration),
        takes this rank's shards (shard='take'), broadcasts the parameters from rank 0.
        Returns (X, Y, X_val, Y_val, seed) of this rank (seed None: rank 0 draws one)."""
        n_val = None if X_val is None else X_val.shape[0]
        proposal = seed if seed is not None else int(np.random.SeedSequence().entropy % 2**63)
        digest = None
        if shard == "take":  # every rank must hold the same data, not only as many rows
            digest = data_digest([None if a is None else net.backend.to_numpy(a)
                                  for a in (X, Y, X_val, Y_val)])
        record = (signature, X.shape[0], n_val, proposal, digest)
        records = agree(self.comm, None, record)
        seed = records[0][3]  # rank 0's: every rank draws the same permutations and masks
        sigs = [r[0] for r in records]
        if any(s != sigs[0] for s in sigs):
            bad = [i for i, s in enumerate(sigs) if s != sigs[0]]
            raise DistributedError(
                "distributed fit stopped before training: the ranks were given different "
                f"options (rank 0: {sigs[0]}; rank {bad[0]}: {sigs[bad[0]]})")
        counts = [r[1] for r in records]
        val_counts = [r[2] for r in records]
        if shard == "take":
            if any(c != counts[0] for c in counts) or any(v != val_counts[0] for v in val_counts):
                raise DistributedError(
                    "distributed fit stopped before training: shard='take' needs the same data "
                    f"on every rank; the ranks hold {counts} rows (validation: {val_counts})")
            differ = [r for r, rec in enumerate(records) if rec[4] != records[0][4]]
            if differ:
                raise DistributedError(
                    "distributed fit stopped before training: shard='take' needs the same data "
                    f"on every rank; rank {differ[0]} holds other values than rank 0 (compared "
                    "by a digest of X, Y and the validation data)")
            self.set_layout([hi - lo for lo, hi in (self._take_range_of(r, counts[0])
                                                    for r in range(self.size))])
            lo, hi = self.take_range(counts[0])
            X, Y = X[lo:hi], Y[lo:hi]
            if X_val is not None:
                b = _bounds(n_val, self.size)
                X_val, Y_val = X_val[b[self.rank]:b[self.rank + 1]], Y_val[b[self.rank]:b[self.rank + 1]]
                self.val_layout = (b[self.rank + 1] - b[self.rank], n_val)
        else:
            self.set_layout(counts)
            if X_val is not None:
                self.val_layout = (n_val, sum(val_counts))
        self.broadcast_params(net)
        self.started = True
        return X, Y, X_val, Y_val, seed

    def start_given(self, net, n_local):
        """The lazy start of a Trainer used directly: this rank holds n_local rows of the
        concatenation, in rank order; the parameters come from rank 0."""
        counts = self.comm.allgather(int(n_local))
        if not self.started:
            self.broadcast_params(net)
            self.started = True
        self.set_layout(counts)


def signature(net, trainer, loss, epochs, batch_size, shuffle, seed, lr_schedule, early_stopping):
    """What must be the same on every rank (compared in the agreement)."""
    if hasattr(early_stopping, "__dict__"):  # an EarlyStopping: its options, not its address
        early_stopping = sorted(vars(early_stopping).items())
    return repr((tuple(net.layers), str(net.dtype), net.backend.name, loss, repr(trainer.optimizer),
                 trainer.l1, trainer.l2, tuple(trainer.dropout), epochs, batch_size, bool(shuffle),
                 seed, lr_schedule is not None, repr(early_stopping),
                 trainer.dist.reduction, trainer.dist.blocks))
