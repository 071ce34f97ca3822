"""How the estimators' steps run besides the kernel path: the backend's fused epochs, and
data-parallel fitting over MPI (the input agreement and the reduced gradient of a batch)."""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.random import RandomState

from .backends import array_module
from .distributed import DistributedError, agree, data_digest
from .step import NonFiniteLossError
from .trainer import Trainer
from .transport import Transport


class FusedEpochs:
    """An epoch of minibatches on the backend's fused path (``Trainer(fused=True)``).

    The library's losses are ours times ``scale`` (mse = 2 · ½ squared error for one output;
    cross_entropy and bce are the classifier's), so the penalty is scaled alike: l2 = scale ·
    alpha / batch size. The last, smaller batch gets its own l2 (scikit-learn divides the
    penalty by each batch's size): the full batches run as one native call, then the rest.
    """

    def __init__(self, net, loss, scale, optimizer, alpha, l1, n, batch_size):
        self.scale, self.b = scale, batch_size
        self.m = (n // batch_size) * batch_size
        self.r = n - self.m
        self.full = self.rest = None
        if self.m:
            self.full = Trainer(net, loss, optimizer, l1=scale * l1 / batch_size,
                                l2=scale * alpha / batch_size, fused=True)
        if self.r:
            self.rest = Trainer(net, loss, optimizer, l1=scale * l1 / self.r,
                                l2=scale * alpha / self.r, fused=True)
        self.state = (self.full or self.rest).state
        if self.rest is not None:
            self.rest.state = self.state  # one optimizer state for both

    def epoch(self, X, Y, order):
        """One epoch over the rows ``order`` (None: in order); returns Σ batch loss · size in
        our scale."""
        if order is not None:
            X, Y = X[order], Y[order]
        total = 0.0
        if self.m:
            values, sizes = self.full.epoch(X[:self.m], Y[:self.m], self.b)
            total += float(np.dot(values, sizes))
        if self.r:
            values, sizes = self.rest.epoch(X[self.m:], Y[self.m:], self.r)
            total += float(np.dot(values, sizes))
        return total / self.scale


# ---- data-parallel fitting over MPI (comm=...) -------------------------------------------

def agree_estimator(est, comm, X, Y, w, reset, incremental):
    """The input agreement of a distributed estimator fit (backprop.distributed's: one
    allgather). Every rank must pass the same data (shard "take": compared by a digest of X, Y
    and the weights) and the same parameters; returns rank 0's seed proposal, used when
    random_state is None so that every rank draws the same initialization, split and orders."""
    params = {k: v for k, v in est.get_params(deep=False).items() if k not in ("comm", "verbose")}
    rs = params.get("random_state")
    if isinstance(rs, RandomState):  # its state, not its address
        params["random_state"] = hashlib.sha256(repr(rs.get_state()).encode()).hexdigest()
    state = getattr(est, "_rng", None)
    rng_state = (None if reset or state is None else
                 hashlib.sha256(repr(state.get_state()).encode()).hexdigest())
    record = {"parameters": repr(sorted(params.items())), "data": data_digest((X, Y, w)),
              "rows": X.shape[0], "mode": (bool(reset), bool(incremental)),
              "generator": rng_state}
    proposal = int(np.random.SeedSequence().entropy % 2**32)
    records = agree(comm, None, (record, proposal))
    for r, (other, _) in enumerate(records):
        for key in record:
            if other[key] != records[0][0][key]:
                what = {"data": "different data (shard 'take' needs the whole X, y and "
                                "sample_weight on every rank)",
                        "rows": "different numbers of rows"}.get(key, f"different {key}")
                raise DistributedError(f"distributed fit stopped before training: rank {r} was "
                                       f"given {what} than rank 0")
    return records[0][1]


class ReducedSteps:
    """The gradient of the global weighted loss of a batch, from every rank's rows of it.

    Every rank holds all the rows (shard "take") and computes over its contiguous part
    [lo, hi) of the training rows. For a batch B with weights w_i and S = Σ_{i∈B} w_i, the
    objective is L = Σ_{i∈B} (w_i/S) ℓ_i, so

        ∇L = Σ_r Σ_{i∈B∩r} (w_i/S) ∇ℓ_i = Σ_r (S_r/S) g_r,
        g_r = Σ_{i∈B∩r} (w_i/S_r) ∇ℓ_i,   S_r = Σ_{i∈B∩r} w_i,

    i.e. rank r's weight is S_r/S (its share of the batch's weight; n_r/N with equal weights).
    Each rank runs the kernels with the row weights w_i/S directly (S known to every rank, as
    every rank holds all the weights), which is (S_r/S) g_r without dividing by S_r (which
    may be 0). The penalty's gradient (alpha/S) W (+ (l1/S) sign W) depends on the weights
    only, the same on every rank, so it is added once after the reduction. One flat buffer
    [dW, db..., objective, reported loss], ONE Allreduce per step (transport.Transport).
    """

    def __init__(self, comm, net):
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.grads = net.grads
        self.xp = array_module(self.grads[0])
        dtype = self.grads[0].dtype
        self.S = sum(int(g.size) for g in self.grads) + 2
        self.send = self.xp.zeros(self.S, dtype)
        self.recv = self.xp.zeros(self.S, dtype)
        self.transport = Transport(comm, self.xp, dtype)
        self.lo = self.hi = 0

    def take(self, n):
        """This rank's rows of n: the contiguous [n r / P, n (r+1) / P)."""
        self.lo, self.hi = n * self.rank // self.size, n * (self.rank + 1) // self.size

    def step(self, net, Xd, Yd, w, rows, loss, alpha, l1, trainer=None, both=False):
        """The reduced gradient of the batch ``rows`` (global indices) into net.grads; returns
        the reported loss (with ``both``: (objective, reported)), the same on every rank."""
        rows = np.asarray(rows)
        sw_sum = float(np.sum(w[rows], dtype=np.float64))
        mine = (rows >= self.lo) & (rows < self.hi)
        pos = np.nonzero(mine)[0]
        masks = trainer.masks(len(rows)) if trainer is not None else None  # the whole batch's
        value = reported = 0.0
        if len(pos):
            local = rows[pos]
            idx = net.backend.asarray(local, np.int64) if self.xp is not np else local
            Xb, Yb = Xd[idx], Yd[idx]
            wn = net.backend.asarray(w[local] / sw_sum, net.dtype)
            if masks is not None:
                p = net.backend.asarray(pos, np.int64) if self.xp is not np else pos
                masks = [None if M is None else M[p] for M in masks]
            ws = net.workspace(Xb.shape[0])
            if masks is not None:
                ws.dropout_buffers(net.backend, net.layers, net.dtype)
                F = net.run_forward(Xb, ws, masks)
            else:
                F = net.run_forward(Xb, ws)
            value, reported = loss(F, Yb, wn, ws.G[-1])
            if masks is not None:
                net.run_backward(Xb, ws, masks)
            else:
                net.run_backward(Xb, ws)
        o = 0
        for g in self.grads:
            view = self.send[o:o + g.size].reshape(g.shape)
            if len(pos):
                view[...] = g
            else:
                view[...] = 0
            o += g.size
        self.send[o], self.send[o + 1] = value, reported
        self.transport.allreduce(self.send, self.recv)
        o = 0
        for g in self.grads:
            g[...] = self.recv[o:o + g.size].reshape(g.shape)
            o += g.size
        value, reported = float(self.recv[o]), float(self.recv[o + 1])
        if alpha or l1:
            for W, dW in zip(net.W, net.dW):
                p = float(net.backend._weight_penalty(W, dW, l1 / sw_sum, alpha / sw_sum))
                value += p
                reported += p
        if not np.isfinite(reported):  # on every rank alike: raised together, no abort
            raise NonFiniteLossError(f"the loss became {reported}; try a smaller "
                                     "learning_rate_init")
        return (value, reported) if both else reported
