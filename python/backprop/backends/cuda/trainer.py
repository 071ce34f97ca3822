"""The cuda backend's fused training step: the frontend's own kernel sequence, captured once per
batch size as a CUDA graph and replayed with one launch per step.

One captured step is, in order:

    train_batch_in                       copies the batch's rows (X and Y addresses, the row
                                         order and the batch index come from a control block in
                                         device memory) into the graph's fixed staging buffers,
                                         and resets the reductions' counter
    MLP.compute_gradients                the model's forward, loss, backward and penalties,
      (net, Xs, Ys, loss, l1, l2)        unchanged, in graph mode: the loss terms go to the
                                         slots of a GraphContext
    train_step_end                       adds the terms in order, ((data + p0) + p1) + ..., as
                                         ``train.step_loss`` does, records the loss in the control
                                         block, sets the stop flag when it is not finite, and
                                         hands lr and Adam's bias corrections to the updates
    OptimizerState.apply                 the frontend's optimizer, unchanged, in graph mode: the
      (backend, net.params, net.grads)   updates read lr and the bias corrections from the
                                         context and do nothing once the stop flag is set

Everything that changes between steps (X's and Y's addresses, lr, Adam's bias corrections per
step, the batch index) is in the control block, so nothing is recaptured when lr or the data
change. A graph keeps a reference to every buffer it uses: its staging buffers, the model's
workspace for its batch size (the model may evict it from its own cache; the graph keeps it
alive), the context and the control block.

What one call launches, counted in ``backend.launches``: ``step``: one graph launch, one
device-to-host copy of the loss (the float it returns), and one host-to-device copy of the
control block when X, Y, lr or t differ from the previous step's (SGD on a fixed batch: two per
step; Adam: three). ``epoch``: one host-to-device copy of the control block, one graph launch
per batch, and one device-to-host copy of the losses at the end: the only wait on the GPU.

A loss that is not finite: ``step`` returns it and the update of that step is skipped on the
device, as on the cpu backend. In ``epoch`` the stop flag stays set for the rest of the epoch:
the remaining batches are still launched (the host does not wait for the GPU) but record and
update nothing, so the model keeps the parameters it had before the first non-finite batch, and
the returned array ends with that batch's loss.
"""

from __future__ import annotations

import math

import numpy as np

from .graph import GraphContext
from .program import THREADS, kernel_name

# the control block, int64 words (see cuda/train.cu)
_CTL_X, _CTL_Y, _CTL_ORDER, _CTL_IDX, _CTL_STOP, _CTL_DRY, _CTL_LOSSES = range(7)
_MAX_GRAPHS = 8  # captured steps kept per trainer (each holds its batch's buffers)


class _StepGraph:
    """One captured step for one batch size: its staging buffers, workspace and graph."""

    def __init__(self, backend, layers, n, dtype, stride):
        self.n, self.stride = n, stride
        self.X = backend.empty((n, layers[0]), dtype)   # the batch is copied here by the graph
        self.Y = backend.empty((n, layers[-1]), dtype)
        self.workspace = None  # the model's workspace for n rows, kept alive with the graph
        self.graph = None


class GraphTrainer:
    """``step(X, Y, lr, t)`` runs one step on the batch (X, Y) with learning rate lr (Adam's
    step t + 1) and returns the loss (data loss + penalty) as a float; ``epoch(X, Y, batch_size,
    order, lr, t)`` runs the minibatches rows order[s : s + batch_size] (order None: in order)
    and returns a float64 numpy array of the batch losses. The same numbers as the
    kernel-by-kernel Trainer: the same kernels with the same arguments, captured from it."""

    def __init__(self, backend, net, loss, optimizer, state, l1=0.0, l2=0.0):
        gradient_kernels = type(net).compute_gradients  # the model's own gradient sequence
        if net.backend is not backend:
            raise ValueError("make_trainer: the model is on another backend")
        if loss not in ("sse", "mse", "cross_entropy", "bce"):
            raise ValueError(f"make_trainer: unknown loss {loss!r}")
        if state.optimizer is not optimizer or len(state.slots) != len(net.params):
            raise ValueError("make_trainer: state must be the optimizer's state over net.params")
        self._gradient_kernels = gradient_kernels
        self.backend, self.net, self.loss = backend, net, loss
        self.optimizer, self.state = optimizer, state
        self.l1, self.l2 = float(l1), float(l2)
        self.layers = list(net.layers)
        self.dtype = np.dtype(net.dtype)
        self.adam = hasattr(optimizer, "beta1")
        self.lr, self.t = float(optimizer.lr), int(state.step)
        penalty = self.l1 != 0 or self.l2 != 0
        self._ctx = GraphContext(backend, self.dtype, 1 + (net.n_layers if penalty else 0))
        self._graphs = {}
        self._cap = 0
        self._ctl = None
        self._ctl_host = None
        self._device_key = None  # what the control block holds for a step (None: unknown)

    # ---- the control block --------------------------------------------------------------

    def _reserve(self, batches):
        """A control block with room for ``batches`` losses; a new one drops the graphs (they
        hold the old one's address)."""
        if batches <= self._cap:
            return
        self._cap = max(batches, 2 * self._cap, 16)
        self._ctl = self.backend.zeros((_CTL_LOSSES + 4 * self._cap,), np.int64)
        self._ctl_host = np.zeros(_CTL_LOSSES + 4 * self._cap, np.int64)
        self._ctx.skip = self._ctl[_CTL_STOP:_CTL_STOP + 1]
        self._graphs = {}
        self._device_key = None

    def _header(self, X, Y, order, lr, t, batches, dry=False):
        """The host copy of the control block's used part: addresses, flags and, per batch,
        [lr, 1-β1^(t+1+i), 1-β2^(t+1+i)]; returns the number of words to upload."""
        host = self._ctl_host
        host[:_CTL_LOSSES] = (X.data.ptr, Y.data.ptr, 0 if order is None else order.data.ptr, 0,
                              0, int(dry))
        table = host[_CTL_LOSSES + self._cap:].view(np.float64)
        rows = table[:3 * batches].reshape(batches, 3)
        rows[:, 0] = lr
        if self.adam:
            steps = range(t + 1, t + 1 + batches)
            rows[:, 1] = [1.0 - self.optimizer.beta1 ** s for s in steps]
            rows[:, 2] = [1.0 - self.optimizer.beta2 ** s for s in steps]
        else:
            rows[:, 1:] = 0.0
        return _CTL_LOSSES + self._cap + 3 * batches

    def _upload_header(self, words):
        self.backend.launcher.upload(self._ctl[:words], self._ctl_host[:words])

    # ---- the captured step ----------------------------------------------------------------

    def _graph(self, n, stride, X, Y, order):
        """The graph of one step on n rows taken at idx * stride, captured on first use (its
        warm-up run, on the rows of X and Y, records a loss but updates nothing)."""
        key = (n, stride)
        sg = self._graphs.get(key)
        if sg is None:
            sg = _StepGraph(self.backend, self.layers, n, self.dtype, stride)
            sg.workspace = self.net.workspace(n)
            self._upload_header(self._header(X, Y, order, self.lr, self.t, 1, dry=True))
            self._device_key = None
            sg.graph = self.backend.capture(lambda: self._kernels(sg))
            if self.net.workspace(n) is not sg.workspace:
                raise RuntimeError("cuda trainer: the model replaced its workspace during capture")
            if len(self._graphs) >= _MAX_GRAPHS:  # a few batch sizes are live at once
                self._graphs.pop(next(iter(self._graphs)))
            self._graphs[key] = sg
        return sg

    def _kernels(self, sg):
        bk, net, ctx = self.backend, self.net, self._ctx
        n, p_in, p_out = sg.n, self.layers[0], self.layers[-1]
        _, counter = bk.reduction_workspace()
        bk._launch(kernel_name("train_batch_in", self.dtype), bk._grid_1d(n * (p_in + p_out)),
                   (THREADS, 1, 1), (self._ctl, sg.X, sg.Y, np.int32(n), np.int32(p_in),
                                     np.int32(p_out), np.int64(sg.stride), counter))
        step = self.state.step
        with bk.graph_mode(ctx):
            values = self._gradient_kernels(net, sg.X, sg.Y, self.loss, self.l1, self.l2)
            if len(values) != ctx.used:
                raise RuntimeError(f"cuda trainer: {len(values)} loss terms but {ctx.used} "
                                   "reductions in the captured sequence")
            bk._launch(kernel_name("train_step_end", self.dtype), (1, 1, 1), (1, 1, 1),
                       (self._ctl, ctx.values, np.int32(ctx.used), np.int32(self._cap),
                        np.int64(sg.stride), ctx.hyper))
            try:
                self.state.apply(bk, net.params, net.grads)
            finally:
                self.state.step = step  # the Trainer counts the steps that ran

    # ---- the protocol ---------------------------------------------------------------------

    def _check_xy(self, X, Y):
        bk = self.backend
        args = bk._args("trainer")
        args.input("X", X, ndim=2)
        n = X.shape[0]
        if X.dtype != self.dtype:
            args.fail(TypeError, f"X is {X.dtype}, the model is {self.dtype}")
        args.input("X", X, shape=(n, self.layers[0]))
        args.input("Y", Y, shape=(n, self.layers[-1]))
        bk._check_int32("trainer", n=n * max(self.layers))
        return n

    def step(self, X, Y, lr, t=0):
        """Forward, loss, backward, penalty and update (Adam's step t+1) on one batch with
        learning rate lr; returns the loss. A loss that is not finite is returned without
        updating."""
        n = self._check_xy(X, Y)
        lr, t = float(lr), int(t)
        self.lr, self.t = lr, t
        self._reserve(1)
        sg = self._graph(n, 0, X, Y, None)
        words = self._header(X, Y, None, lr, t, 1)
        key = (X.data.ptr, Y.data.ptr, self._ctl_host[_CTL_LOSSES + self._cap:words].tobytes())
        if key != self._device_key:
            self._upload_header(words)
            self._device_key = key
        sg.graph.launch()
        head = self.backend.launcher.download(self._ctl[_CTL_LOSSES:_CTL_LOSSES + 1])
        value = float(head.view(np.float64)[0])
        if math.isfinite(value) and self.adam:
            self.t = t + 1
        return value

    def epoch(self, X, Y, batch_size, order=None, lr=None, t=0):
        """Steps over X[order] (order None: X in order) in minibatches of batch_size; returns
        each batch's loss (float64), stopping after the first batch whose loss is not finite
        (that batch not updated; see the module docstring)."""
        N = self._check_xy(X, Y)
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        lr = self.lr if lr is None else float(lr)
        t = int(t)
        self.lr, self.t = lr, t
        if order is not None:
            host_order = np.asarray(self.backend.to_numpy(order))
            if host_order.dtype != np.int64:
                raise TypeError(f"order must be an int64 array, got {host_order.dtype}")
            if host_order.shape != (N,):
                raise ValueError(f"order must have shape ({N},), got {host_order.shape}")
            if N and (host_order.min() < 0 or host_order.max() >= N):
                raise ValueError(f"order has indices out of range for {N} samples")
            order = self.backend.zeros((N,), np.int64)
            self.backend.launcher.upload(order, host_order)
        batches = -(-N // batch_size)
        self._reserve(batches)
        sizes = [min(batch_size, N - s) for s in range(0, N, batch_size)]
        graphs = {n: self._graph(n, batch_size, X, Y, order) for n in sorted(set(sizes))}
        self._upload_header(self._header(X, Y, order, lr, t, batches))
        self._device_key = None
        for n in sizes:
            graphs[n].graph.launch()
        head = self.backend.launcher.download(self._ctl[:_CTL_LOSSES + batches])
        ran = int(head[_CTL_IDX])
        losses = head[_CTL_LOSSES:_CTL_LOSSES + ran].view(np.float64).copy()
        if self.adam:
            self.t = t + ran - (0 if ran and np.isfinite(losses[-1]) else 1)
        return losses


__all__ = ["GraphTrainer"]
