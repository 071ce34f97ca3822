"""The MLP: a stack of dense layers whose forward and backward passes are sequences of kernels.

The model never branches on which backend it holds: it calls the kernels of
``backends/base.py`` in the order of Raissi's equations and keeps its parameters, gradients and
activation buffers on that backend between calls.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from . import _checks, model_file
from .backends import get_backend
from .init import init_params
from .standardize import Standardizer
from .tensor.core import leaf
from .tensor.dense import forward as mlp_forward
from .tensor.derivatives import derivatives as tensor_derivatives


@dataclass
class Grads:
    """Gradients of the loss: ``weights`` and ``biases`` shaped like the parameters, ``X`` like X."""

    weights: list
    biases: list
    X: np.ndarray | None = None


class Workspace:
    """The activation and gradient buffers of one batch size, reused across steps.

    A[l]: n x p_l, the output of layer l-1 (A[0] is the input, not owned)
    D[l]: n x p_l, A[l] after the dropout mask (only when dropout is on)
    G[l]: n x p_{l+1}, dLoss/dH at the output of layer l
    """

    def __init__(self, backend, layers, n, dtype):
        self.n = n
        self.A = [None] + [backend.empty((n, p), dtype) for p in layers[1:]]
        self.G = [backend.empty((n, p), dtype) for p in layers[1:]]
        self.dX = backend.empty((n, layers[0]), dtype)
        self.D = None

    def dropout_buffers(self, backend, layers, dtype):
        """D[1] ... D[L-1], allocated the first time dropout is used at this batch size."""
        if self.D is None:
            self.D = [None] + [backend.empty((self.n, p), dtype) for p in layers[1:-1]]
        return self.D


class MLP:
    """A dense network F = act_out(H_L), H_{l+1} = A_l W_l + b_l, A_{l+1} = act(H_{l+1}), A_0 = X.

    ``layers``: the widths [p_0, ..., p_L]. ``activation``: the hidden layers' activation, one
    name or a list with one name per hidden layer. ``output_activation``: the last layer's.
    ``init``: "xavier", "he" or "lecun" (biases start at zero). ``backend``: "numpy", "cpu" or
    "cuda". ``dtype``: "float32" or "float64". ``seed``: makes the initial weights reproducible
    (the same numbers on every backend).
    """

    def __init__(self, layers, activation="tanh", output_activation="identity", init="xavier",
                 backend="numpy", dtype="float32", seed=None):
        self.layers = _checks.check_layers(layers)
        n_hidden = len(self.layers) - 2
        if activation is None or isinstance(activation, str):
            activation = [_checks.check_activation(activation)] * n_hidden
        try:
            activation = list(activation)
        except TypeError:
            _checks.check_activation(activation)  # raises: unknown activation, the valid ones
        if len(activation) != n_hidden:
            raise ValueError(f"{len(activation)} activations given for {n_hidden} hidden layers")
        self.activations = [_checks.check_activation(a) for a in activation]
        self.output_activation = _checks.check_activation(output_activation)
        self.init = init
        self.seed = seed
        self.dtype = _checks.check_dtype(dtype)
        self.backend = get_backend(backend)
        self.standardizer = None
        weights, biases = init_params(self.layers, init, seed)
        # the parameters W_l, b_l and their gradient buffers dW_l, db_l: arrays of the backend
        # that every path updates in place (the kernels, the fused steps, the optimizers through
        # ``parameters()``), so they are one set of numbers
        self.W = [self.backend.asarray(W, self.dtype) for W in weights]
        self.b = [self.backend.asarray(b, self.dtype) for b in biases]
        self.dW = [self.backend.zeros(W.shape, self.dtype) for W in weights]
        self.db = [self.backend.zeros(b.shape, self.dtype) for b in biases]
        self._workspaces = {}
        self._parameter_tensors = None
        # one call at a time: predict, loss_and_grad, fit, set_params and the parameter getters
        # share the workspaces and parameter buffers (re-entrant: fit calls set_params); the
        # training front ends hold it around every step
        self.lock = threading.RLock()

    #: the training loop behind ``fit`` (``backprop.train.fit``): the loop is a layer above the
    #: model, so it sets this when it is imported (``import backprop`` imports it)
    training_loop = None

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["lock"]
        state["_workspaces"] = {}
        state["_parameter_tensors"] = None  # made again, around the unpickled arrays
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.backend = get_backend(self.backend.name)  # the registry's one backend of that name
        self.lock = threading.RLock()

    # ---- parameters -------------------------------------------------------------------

    @property
    def n_layers(self):
        """L, the number of dense layers (weight matrices)."""
        return len(self.layers) - 1

    @property
    def layer_activations(self):
        """The activation of each layer's output: the hidden ones, then the output activation."""
        return self.activations + [self.output_activation]

    @property
    def weights(self):
        """Host copies of W_0 ... W_{L-1}, W_l of shape (p_l, p_{l+1})."""
        with self.lock:
            return [np.array(self.backend.to_numpy(W)) for W in self.W]

    @property
    def biases(self):
        """Host copies of b_0 ... b_{L-1}, b_l of shape (p_{l+1},)."""
        with self.lock:
            return [np.array(self.backend.to_numpy(b)) for b in self.b]

    @property
    def params(self):
        """The backend's parameter arrays in optimizer order: W_0, b_0, W_1, b_1, ..."""
        return [p for pair in zip(self.W, self.b) for p in pair]

    @property
    def grads(self):
        """The backend's gradient buffers, in the order of ``params``."""
        return [g for pair in zip(self.dW, self.db) for g in pair]

    @property
    def n_params(self):
        return sum(p * q + q for p, q in zip(self.layers[:-1], self.layers[1:]))

    def reset_parameters(self, seed=None):
        """Draws fresh initial weights (the model's ``init``; zero biases), in place; ``seed``
        makes them reproducible. ``fit`` continues from the current parameters: call this to
        start a new training from scratch."""
        weights, biases = init_params(self.layers, self.init, seed)
        with self.lock:
            self.seed = seed
            for l, (W, b) in enumerate(zip(weights, biases)):
                self.W[l][...] = self.backend.asarray(W, self.dtype)
                self.b[l][...] = self.backend.asarray(b, self.dtype)
        return self

    def set_params(self, weights, biases):
        """Replaces the parameters (copied in place into the model's arrays, shapes checked)."""
        if len(weights) != self.n_layers or len(biases) != self.n_layers:
            raise ValueError(f"expected {self.n_layers} weights and {self.n_layers} biases; "
                             f"got {len(weights)} and {len(biases)}")
        checked = []
        for l, (W, b) in enumerate(zip(weights, biases)):
            W = _checks.as_matrix(W, f"weights[{l}]")
            b = _checks.as_matrix(b, f"biases[{l}]")
            p, q = self.layers[l], self.layers[l + 1]
            if tuple(W.shape) != (p, q):
                raise ValueError(f"weights[{l}] must have shape {(p, q)}; got {tuple(W.shape)}")
            if tuple(b.shape) != (q,):
                raise ValueError(f"biases[{l}] must have shape {(q,)}; got {tuple(b.shape)}")
            _checks.check_finite(W, f"weights[{l}]")
            _checks.check_finite(b, f"biases[{l}]")
            _checks.check_fits(W, self.dtype, f"weights[{l}]")
            _checks.check_fits(b, self.dtype, f"biases[{l}]")
            checked.append((W, b))
        with self.lock:
            for l, (W, b) in enumerate(checked):
                self.W[l][...] = self.backend.asarray(W, self.dtype)
                self.b[l][...] = self.backend.asarray(b, self.dtype)

    # ---- forward and backward ---------------------------------------------------------

    def workspace(self, n):
        if n not in self._workspaces:
            if len(self._workspaces) >= 4:  # a few batch sizes are live at once (batch, last, val)
                self._workspaces.pop(next(iter(self._workspaces)))
            self._workspaces[n] = Workspace(self.backend, self.layers, n, self.dtype)
        return self._workspaces[n]

    def on_device(self, x):
        """Whether ``x`` is an array of the backend's own (a CuPy array on the cuda backend)."""
        on_device = getattr(self.backend, "is_device_array", None)
        return on_device is not None and bool(on_device(x))

    def input_array(self, X, standardizer=None, standardize=True):
        """X checked, standardized (by ``standardizer``, else the model's own, if any; not at
        all with ``standardize=False``), on the backend in the model's dtype; values that would
        overflow that dtype raise."""
        standardizer = self.standardizer if standardizer is None else standardizer
        if not standardize:
            standardizer = None
        if self.on_device(X):  # checked and standardized where it is, no copy to the host
            X = _checks.check_inputs(X, self.layers[0])
            if standardizer is not None:  # (X - mean) / scale
                _checks.check_fits(X, np.float64, "X")
                mean = self.backend.asarray(standardizer.mean, np.float64)
                scale = self.backend.asarray(standardizer.scale, np.float64)
                X = (X.astype(np.float64) - mean) / scale
            _checks.check_fits(X, self.dtype, "X" if standardizer is None else "the standardized X")
            return self.backend.asarray(X, self.dtype)
        X = _checks.check_inputs(X, self.layers[0], finite=False)
        if standardizer is None:
            X = _checks.cast(X, self.dtype, "X", " (fit(..., standardize=True) or a Standardizer "
                             "rescales the inputs)")
        else:
            _checks.check_finite(X, "X")
            _checks.check_fits(X, np.float64, "X")
            X = _checks.cast(standardizer.transform(X), self.dtype, "the standardized X")
        return self.backend.asarray(X, self.dtype)

    def target_array(self, Y, n, loss):
        Y = _checks.check_targets(Y, n, self.layers[-1], loss)
        if self.on_device(Y):
            return self.backend.asarray(_checks.check_fits(Y, self.dtype, "Y"), self.dtype)
        return self.backend.asarray(_checks.cast(Y, self.dtype, "Y", " (rescale the targets)"),
                                    self.dtype)

    def run_forward(self, X, ws, masks=None):
        """F, with every layer's activation left in the workspace for the backward pass.

        H_{l+1} = A_l W_l + b_l, A_{l+1} = act(H_{l+1}); with dropout, A_{l+1} ⊙ M_l feeds layer l+1.
        """
        backend, acts = self.backend, self.layer_activations
        A = X
        for l in range(self.n_layers):
            A = backend._dense_forward(A, self.W[l], self.b[l], acts[l], ws.A[l + 1])
            if masks is not None and l < self.n_layers - 1 and masks[l] is not None:
                A = backend._dropout(A, masks[l], ws.D[l + 1])
        return A

    def _layer_input(self, X, ws, masks, l):
        """The array that fed layer l: X, A_l, or A_l ⊙ M when dropout masked it."""
        if l == 0:
            return X
        if masks is not None and masks[l - 1] is not None:
            return ws.D[l]
        return ws.A[l]

    def run_backward(self, X, ws, masks=None, need_dX=False):
        """dW_l, db_l into the model's gradient buffers; returns dX (or None).

        Starts from G = ws.G[L-1] = dLoss/dH_L and runs, from the last layer to the first,
            dW_l = A_lᵀ G_l,  db_l = 1ᵀ G_l,  G_{l-1} = act'(A_l) ⊙ (G_l W_lᵀ),  dX = G_0 W_0ᵀ.
        """
        backend, acts = self.backend, self.layer_activations
        for l in reversed(range(self.n_layers)):
            G = ws.G[l]
            A_in = self._layer_input(X, ws, masks, l)
            if l == 0:
                dX = ws.dX if need_dX else None
                backend._dense_backward(G, A_in, self.W[0], None, self.dW[0], self.db[0], dX)
                return dX
            if masks is not None and masks[l - 1] is not None:
                # dLoss/d(A ⊙ M) = G Wᵀ, then through the mask, then through act'(A)
                dD = ws.G[l - 1]
                backend._dense_backward(G, A_in, self.W[l], None, self.dW[l], self.db[l], dD)
                backend._dropout(dD, masks[l - 1], dD)
                backend._activation_backward(dD, ws.A[l], acts[l - 1], dD)
            else:
                backend._dense_backward(G, A_in, self.W[l], acts[l - 1], self.dW[l],
                                        self.db[l], ws.G[l - 1])
        return None

    def run_loss_and_grad(self, X, Y, loss, masks=None, need_dX=False):
        """Loss value, gradients into the model's buffers, and dX; X and Y already on the backend."""
        ws = self.workspace(X.shape[0])
        if masks is not None:
            ws.dropout_buffers(self.backend, self.layers, self.dtype)
        F = self.run_forward(X, ws, masks)
        G = ws.G[-1]
        value = self.backend._loss(loss, F, Y, G)
        if self.output_activation != "identity":
            self.backend._activation_backward(G, F, self.output_activation, G)
        dX = self.run_backward(X, ws, masks, need_dX)
        return value, dX

    def compute_gradients(self, X, Y, loss, l1=0.0, l2=0.0, masks=None):
        """The gradient half of one training step, as kernels of the backend.

            F = forward(X);  value, G = loss(F, Y);  G = act_out'(F) ⊙ G;  dW_l, db_l = backward(G)
            value_l = l1 Σ|W_l| + (l2/2) Σ W_l²;  dW_l += l1 sign(W_l) + l2 W_l     (when l1 or l2)

        X and Y are arrays of the backend (checked by the caller); the gradients land in
        ``dW``/``db`` (``grads``). Returns the loss terms [data loss, penalty_0, penalty_1, ...]
        (no penalty terms when l1 = l2 = 0) exactly as the kernels returned them: nothing is
        read back to the host here, so a backend can record this sequence (the cuda backend
        captures it in a CUDA graph). The step's loss is their sum, added in this order
        (``backprop.step.step_loss``).
        """
        value, _ = self.run_loss_and_grad(X, Y, loss, masks=masks)
        values = [value]
        if l1 != 0 or l2 != 0:
            values += [self.backend._weight_penalty(W, dW, l1, l2) for W, dW in zip(self.W, self.dW)]
        return values

    # ---- public API -------------------------------------------------------------------

    def forward(self, X):
        """F for X given as an array of the backend (no checks, no copy back): the raw forward.

        F is a buffer of the model's workspace that the next call overwrites.
        """
        with self.lock:
            ws = self.workspace(X.shape[0])
            return self.run_forward(X, ws)

    def predict(self, X):
        """The network's output F (n x p_L) for inputs X (n x p_0): numpy in, numpy out.

        An array of the backend (a CuPy array on the cuda backend) gives an array of the
        backend, with no copy through the host.
        """
        if self.on_device(X):
            with self.lock:
                X = self.input_array(X)
                F = self.run_forward(X, self.workspace(X.shape[0]))
                return F.copy()  # a copy: the workspace buffer is reused
        with self.lock:
            X = self.input_array(X)
            F = self.run_forward(X, self.workspace(X.shape[0]))
            return np.array(self.backend.to_numpy(F))

    def loss_and_grad(self, X, Y, loss="sse"):
        """(loss, grads) at X, Y: ``grads.weights``, ``grads.biases`` and ``grads.X`` = dLoss/dX.

        dLoss/dX is Raissi's G_0 W_0ᵀ, taken with respect to the raw X (before any Standardizer).
        """
        loss = _checks.check_loss(loss)
        with self.lock:
            standardizer = self.standardizer
            Xb = self.input_array(X, standardizer)
            Yb = self.target_array(Y, Xb.shape[0], loss)
            value, dX = self.run_loss_and_grad(Xb, Yb, loss, need_dX=True)
            dX = np.array(self.backend.to_numpy(dX))
            if standardizer is not None:
                dX = dX / standardizer.scale.astype(dX.dtype)
            grads = Grads([np.array(self.backend.to_numpy(g)) for g in self.dW],
                          [np.array(self.backend.to_numpy(g)) for g in self.db], dX)
            return float(value), grads

    def fit(self, X, Y, loss="mse", optimizer="adam", lr=1e-3, epochs=100, batch_size=None,
            l1=0.0, l2=0.0, dropout=0.0, validation_data=None, early_stopping=None,
            shuffle=True, verbose=False, **options):
        """Trains the network; see ``backprop.train.fit`` for every option. Returns a History."""
        fit = MLP.training_loop
        if fit is None:
            raise RuntimeError("MLP.fit needs the training loop: import backprop")
        return fit(self, X, Y, loss=loss, optimizer=optimizer, lr=lr, epochs=epochs,
                   batch_size=batch_size, l1=l1, l2=l2, dropout=dropout,
                   validation_data=validation_data, early_stopping=early_stopping,
                   shuffle=shuffle, verbose=verbose, **options)

    def config(self):
        """The architecture, as plain values (what ``save`` writes beside the parameters)."""
        return {"layers": self.layers, "activation": self.activations,
                "output_activation": self.output_activation, "init": self.init,
                "dtype": self.dtype.name, "seed": self.seed}

    def to(self, backend, dtype=None):
        """A copy of this network on another backend (and optionally dtype), same parameters."""
        config = self.config()
        config["dtype"] = self.dtype if dtype is None else dtype
        net = MLP(backend=backend, **config)
        with self.lock:
            weights, biases, standardizer = self.weights, self.biases, self.standardizer
        net.set_params(weights, biases)
        net.standardizer = None if standardizer is None else standardizer.copy()
        return net

    def copy(self):
        """An independent copy: same backend, dtype, parameters and (a copy of the) Standardizer."""
        return self.to(self.backend)

    def __repr__(self):
        return (f"MLP({self.layers}, activation={self.activations}, output_activation="
                f"{self.output_activation!r}, backend={self.backend.name!r}, dtype={self.dtype.name!r})")

    # ---- the Tensor layer ---------------------------------------------------------------

    def __call__(self, X, standardize=True):
        """F = net(X) as a Tensor (X a Tensor or an array): one recorded dense node per layer.

        The model's Standardizer, if any, is applied to X first (``standardize=False``: X is
        already standardized, as the arrays ``fit`` and ``Trainer`` hand to a callable loss).
        An array X is checked, standardized in float64 and cast as ``predict`` does."""
        return mlp_forward(self, X, standardize)

    def parameters(self):
        """[W_0, b_0, W_1, b_1, ...] as leaf Tensors (requires_grad) whose ``value`` *is* the
        model's array: give them to an optimizer (``bp.optim.Adam(net.parameters())``) and every
        update is the model's, seen by ``predict`` and the fused paths alike. The same Tensors
        come back on every call, so gradients of several ``net(X)`` calls accumulate in one
        place."""
        arrays = self.params
        cached = self._parameter_tensors
        if cached is None or any(t.value is not a for t, a in zip(cached, arrays)):
            cached = [leaf(a, self.backend, requires_grad=True) for a in arrays]
            self._parameter_tensors = cached
        return list(cached)

    def derivatives(self, X, first=(), second=(), names=None):
        """(u, du..., d2u...): the output and its derivatives w.r.t. the inputs, as Tensors
        (``.numpy()`` for arrays). ``first``: inputs (indices or names from ``names``);
        ``second``: pairs of inputs (or strings such as "xt"). See ``bp.tensor.derivatives``."""
        return tensor_derivatives(self, X, first, second, names)

    # ---- files ------------------------------------------------------------------------

    def save(self, path):
        """Writes the model to ``path`` (.npz) atomically: a temporary file renamed into place
        (the format: ``backprop.model_file``).

        After distributed training (fit(..., comm=...)) every rank holds the same parameters:
        save on rank 0 only (``if comm.Get_rank() == 0: net.save(path)``), not on every rank."""
        with self.lock:
            weights, biases, standardizer = self.weights, self.biases, self.standardizer
        model_file.write(path, self.config(), weights, biases,
                         None if standardizer is None else (standardizer.mean, standardizer.scale),
                         getattr(self, "metadata", None))

    @classmethod
    def load(cls, path, backend="numpy", dtype=None):
        """A model read from a file written by ``save``, on ``backend``.

        The file is checked before anything is allocated (``backprop.model_file.read``): the
        header's layers against the shapes the .npz members declare (read from their .npy
        headers, not their data), each array against ``model_file.MAX_ARRAY_ELEMENTS``; only the
        members a model file has are read, and any other member is rejected unread.
        """
        path = os.fspath(path)
        header, weights, biases, standardizer, metadata = model_file.read(path)
        try:
            net = cls(header["layers"], activation=header["activation"],
                      output_activation=header["output_activation"], init=header["init"],
                      backend=backend, dtype=dtype or header["dtype"], seed=header["seed"])
        except (TypeError, ValueError) as exc:
            raise model_file.damaged(path, f"header: {exc}") from None
        try:
            net.set_params(weights, biases)
        except (TypeError, ValueError) as exc:
            raise model_file.damaged(path, str(exc)) from None
        if standardizer is not None:
            try:
                net.standardizer = Standardizer.from_arrays(*standardizer)
            except (TypeError, ValueError) as exc:
                raise model_file.damaged(path, str(exc)) from None
        if metadata is not None:
            net.metadata = metadata
        return net
