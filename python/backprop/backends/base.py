"""The Backend protocol: the one set of kernels every backend implements, with the same names.

Conventions (Raissi's): samples are rows, arrays are C-contiguous (row-major).

    X  : n x p_0                    the input, A_0 = X
    W_l: p_l x p_{l+1}              weights of layer l
    b_l: p_{l+1}                    bias of layer l (a row, stored 1-D)
    H_{l+1} = A_l W_l + b_l         pre-activation          (n x p_{l+1})
    A_{l+1} = act(H_{l+1})          activation              (n x p_{l+1})
    F = act_out(H_L)                the network's output
    G_l = dLoss/dH_{l+1}            the backward signal at layer l's output

Backward (for every layer, from the last to the first):

    dW_l     = A_lᵀ G_l                          the weight gradient
    db_l     = 1ᵀ G_l                            the bias-sum reduction
    G_{l-1}  = act'(A_l) ⊙ (G_l W_lᵀ)            the derivative Hadamard
    dX       = G_0 W_0ᵀ                          the input gradient

Every activation here has a derivative that is a function of its own output A, as in
Raissi's tanh'(H) = 1 - A ⊙ A, so the pre-activation H is never stored: the backward pass
needs only the activations A_l.

    tanh        act'(A) = 1 - A ⊙ A
    sigmoid     act'(A) = A ⊙ (1 - A)
    relu        act'(A) = [A > 0]
    leaky_relu  act'(A) = [A > 0] + 0.01 [A <= 0]
    identity    act'(A) = 1

Every kernel takes and returns arrays of the backend (``asarray`` makes one, ``to_numpy`` copies
one back). Outputs may be given as preallocated ``out`` buffers, which the kernel overwrites and
returns; with ``out=None`` the kernel allocates.

Checks live in one layer, this class. Each public kernel below checks its arguments (arrays of
this backend, C-contiguous, one float dtype, not empty, shapes that chain, known names, finite
hyper-parameters) and raises TypeError/ValueError with a message naming the backend, the kernel
and the argument; then it allocates missing outputs and calls the backend's implementation of
the same name with a leading underscore (``gemm`` -> ``_gemm``), which may assume all of that and
receives every output. Native code below keeps only the checks that protect memory. The
library's own frontend (the MLP, Trainer, the optimizers, the Tensor layer), whose arrays are
checked once when they enter and whose buffers it made itself, calls the ``_<kernel>``
implementations directly: a check per kernel call would cost more than a small layer's work.

The aliasing rule, the same on every backend: an elementwise kernel (``activation_forward``,
``activation_backward``, ``dropout``) may write its output into its FIRST input (the very same
array: in place); no other output may overlap any input or another output. Parameters and
optimizer state updated in place (``weight_penalty``'s dW, the updates' param, velocity, m, v)
are outputs.

A backend that lacks a kernel raises ``NotImplementedError`` naming the kernel and the backend:
nothing falls back to another backend silently.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .checks import KernelArgs
from .names import ACTIVATIONS, LEAKY_SLOPE, LOSSES  # noqa: F401  (re-exported)

# The kernel vocabulary, in the order base.py defines it. Tests walk this list. A backend implements
# the memory kernels as named and each compute kernel as ``_<name>`` (see COMPUTE_KERNELS).
KERNELS = (
    "asarray", "to_numpy", "zeros", "empty", "synchronize", "is_array", "may_overlap", "same_buffer",
    "gemm", "dense_forward", "dense_backward",
    "activation_forward", "activation_backward", "colsum", "dropout",
    "loss", "weight_penalty", "sgd_update", "adam_update",
    "taylor_forward", "taylor_backward",
)
COMPUTE_KERNELS = KERNELS[KERNELS.index("gemm"):]
# Kernels that not every backend implements, and the backends that do (the one place that says
# so; tests read it through ``implements``). On the others the public kernel checks its arguments
# and then raises NotImplementedError naming the kernel and the backend. A kernel not listed here
# is implemented by every backend; at present that is every kernel (the Taylor-mode kernels run
# on numpy, cpu and cuda).
PARTIAL_KERNELS: dict = {}


def implements(backend, kernel):
    """Whether the backend named ``backend`` implements ``kernel`` (see PARTIAL_KERNELS)."""
    return backend in PARTIAL_KERNELS.get(kernel, (backend,))


class TaylorSaved(NamedTuple):
    """What ``taylor_forward`` keeps for ``taylor_backward`` (every layer's output and streams).

    As[l]: n x p_l (As[0] is X), dAs[l]: k1 x n x p_l, d2As[l]: k2 x n x p_l, for l = 0..L;
    ``first`` the k1 input indices of the streams, ``second`` the k2 pairs (a, c) of positions
    in ``first`` (not input indices) of the second-derivative streams. ``taylor_forward`` makes
    As[l], dAs[l], d2As[l] (l >= 1) views of one (1 + k1 + k2) x n x p_l buffer, in that order,
    and dAs[0], d2As[0] views of one (k1 + k2) x n x p_0 buffer, so that a backend can reach
    every stream of a layer from one pointer (the cpu backend relies on it). What a backend
    keeps in the hidden layers' buffers is its own: the cpu backend keeps there, block by block
    of samples, A and the streams before the activation (Ḣ, Ḧ, which its backward needs),
    feature-major (csrc/taylor.hpp), so its hidden As, dAs, d2As are not n x p arrays of
    values. The last layer's are always the results, F, dF and d2F."""
    As: list
    dAs: list
    d2As: list
    first: tuple
    second: tuple


class BackendUnavailable(RuntimeError):
    """A backend cannot run on this machine (not built, no GPU, CuPy missing); says why."""


class Backend:
    """The protocol. The public kernels check their arguments and allocate missing outputs here,
    once for every backend, then call the backend's ``_<kernel>`` (which a subclass overrides)."""

    name = "base"

    def reusable(self, shapes, dtype):
        """Arrays of these shapes for saved values (a backend may hand out memory it reuses once
        nothing refers to it: HostMemory does)."""
        return [self.empty(shape, dtype) for shape in shapes]

    def _missing(self, kernel):
        raise NotImplementedError(f"backend {self.name!r} does not implement kernel {kernel!r}")

    def _args(self, kernel):
        return KernelArgs(self, kernel)

    # ---- memory -----------------------------------------------------------------------

    def asarray(self, x, dtype):
        """A C-contiguous array of ``dtype`` on this backend holding ``x`` (no copy if it already is one)."""
        self._missing("asarray")

    def to_numpy(self, x):
        """A numpy array with the values of backend array ``x`` (a copy from a device)."""
        self._missing("to_numpy")

    def zeros(self, shape, dtype):
        """A C-contiguous array of zeros on this backend."""
        self._missing("zeros")

    def empty(self, shape, dtype):
        """A C-contiguous uninitialized array on this backend."""
        self._missing("empty")

    def synchronize(self):
        """Wait until all queued work is finished (a no-op on host backends). Used for timing."""
        self._missing("synchronize")

    def is_array(self, x):
        """True when ``x`` is an array of this backend (what the kernels accept)."""
        self._missing("is_array")

    def may_overlap(self, x, y):
        """True when arrays ``x`` and ``y`` of this backend may share memory (bounds overlap)."""
        self._missing("may_overlap")

    def same_buffer(self, x, y):
        """True when ``x`` and ``y`` are views of exactly the same memory (same start and shape)."""
        self._missing("same_buffer")

    # ---- the matrix product -----------------------------------------------------------

    def gemm(self, A, B, out=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
        """C = alpha op(A) op(B) + beta C, op(X) = Xᵀ if trans_X else X.

        op(A): m x k, op(B): k x n, C: m x n. With ``beta != 0`` ``out`` must be given and holds C.
        """
        args = self._args("gemm")
        args.input("A", A, ndim=2)
        args.input("B", B, ndim=2)
        trans_a, trans_b = bool(trans_a), bool(trans_b)
        m, k = A.shape[::-1] if trans_a else A.shape
        k2, n = B.shape[::-1] if trans_b else B.shape
        if k != k2:
            args.fail(ValueError, f"op(A) is {m}x{k} but op(B) is {k2}x{n}: the inner sizes differ")
        alpha = args.number("alpha", alpha)
        beta = args.number("beta", beta)
        if beta != 0.0 and out is None:
            args.fail(ValueError, "beta != 0 needs out (it holds C)")
        out = args.output("out", out, (m, n))
        return self._gemm(A, B, out, trans_a, trans_b, alpha, beta)

    def _gemm(self, A, B, out, trans_a, trans_b, alpha, beta):
        self._missing("gemm")

    # ---- one dense layer --------------------------------------------------------------

    def dense_forward(self, A, W, b, activation, out=None):
        """A_next = act(A W + b).

        A: n x p_in, W: p_in x p_out, b: p_out  ->  A_next: n x p_out.
        The product, the bias (broadcast over rows) and the activation; fused where possible.
        """
        args = self._args("dense_forward")
        args.input("A", A, ndim=2)
        args.input("W", W, ndim=2)
        n, p_in = A.shape
        if W.shape[0] != p_in:
            args.fail(ValueError, f"A {tuple(A.shape)} and W {tuple(W.shape)} do not chain "
                                  "(A: n x p_in, W: p_in x p_out)")
        p_out = W.shape[1]
        args.input("b", b, shape=(p_out,))
        activation = args.activation(activation)
        out = args.output("out", out, (n, p_out))
        return self._dense_forward(A, W, b, activation, out)

    def _dense_forward(self, A, W, b, activation, out):
        self._missing("dense_forward")

    def dense_backward(self, G, A_prev, W, activation_prev, dW=None, db=None, G_prev=None,
                       need_G_prev=True):
        """(dW, db, G_prev) for one layer, given G = dLoss/dH at its output.

        G: n x p_out, A_prev: n x p_in (the layer's input), W: p_in x p_out.

            dW     = A_prevᵀ G                                  p_in x p_out
            db     = 1ᵀ G                                       p_out
            G_prev = act_prev'(A_prev) ⊙ (G Wᵀ)                 n x p_in

        ``activation_prev`` is the activation that produced A_prev; ``None`` means A_prev is not
        an activation output (the input X, or a dropout-masked activation) and G_prev = G Wᵀ,
        the plain input gradient. With ``need_G_prev=False`` the product G Wᵀ is skipped and
        G_prev is returned as None (the input layer, when dX is not wanted).
        """
        args = self._args("dense_backward")
        args.input("G", G, ndim=2)
        args.input("W", W, ndim=2)
        n, p_out = G.shape
        p_in = W.shape[0]
        if W.shape[1] != p_out:
            args.fail(ValueError, f"G {tuple(G.shape)} and W {tuple(W.shape)} do not chain "
                                  "(G: n x p_out, W: p_in x p_out)")
        args.input("A_prev", A_prev, shape=(n, p_in))
        activation_prev = args.activation(activation_prev, allow_none=True)
        dW = args.output("dW", dW, (p_in, p_out))
        db = args.output("db", db, (p_out,))
        G_prev = args.output("G_prev", G_prev, (n, p_in)) if need_G_prev else None
        self._dense_backward(G, A_prev, W, activation_prev, dW, db, G_prev)
        return dW, db, G_prev

    def _dense_backward(self, G, A_prev, W, activation_prev, dW, db, G_prev):
        """``G_prev`` None: skip the product G Wᵀ."""
        self._missing("dense_backward")

    # ---- elementwise and reductions ---------------------------------------------------

    def activation_forward(self, H, activation, out=None):
        """A = act(H), elementwise (``out`` may be H: in place)."""
        args = self._args("activation_forward")
        args.input("H", H)
        activation = args.activation(activation)
        out = args.output("out", out, H.shape, in_place_of=H)
        return self._activation_forward(H, activation, out)

    def _activation_forward(self, H, activation, out):
        self._missing("activation_forward")

    def activation_backward(self, dA, A, activation, out=None):
        """G = dA ⊙ act'(A), elementwise, the derivative taken from the activation's output A
        (``out`` may be dA: in place)."""
        args = self._args("activation_backward")
        args.input("dA", dA)
        args.input("A", A, shape=dA.shape)
        activation = args.activation(activation)
        out = args.output("out", out, dA.shape, in_place_of=dA)
        return self._activation_backward(dA, A, activation, out)

    def _activation_backward(self, dA, A, activation, out):
        self._missing("activation_backward")

    def colsum(self, G, out=None):
        """db = 1ᵀ G: the sum over rows (samples) of an n x p array, a p-vector."""
        args = self._args("colsum")
        args.input("G", G, ndim=2)
        out = args.output("out", out, (G.shape[1],))
        return self._colsum(G, out)

    def _colsum(self, G, out):
        self._missing("colsum")

    def dropout(self, A, M, out=None):
        """A ⊙ M, with M the inverted-dropout mask: 0 where dropped, 1/(1-p) where kept
        (``out`` may be A: in place).

        The same kernel applies the mask forward (to A) and backward (to dLoss/dA).
        """
        args = self._args("dropout")
        args.input("A", A)
        args.input("M", M, shape=A.shape)
        out = args.output("out", out, A.shape, in_place_of=A)
        return self._dropout(A, M, out)

    def _dropout(self, A, M, out):
        self._missing("dropout")

    # ---- losses -----------------------------------------------------------------------

    def loss(self, name, F, Y, G=None):
        """(value, G): the loss of outputs F (n x k) against targets Y (n x k) and G = dLoss/dF.

            sse            L = ½ Σ (F - Y)²                     G = F - Y
            mse            L = (1/nk) Σ (F - Y)²                G = 2 (F - Y) / nk
            cross_entropy  L = -(1/n) Σ_i Σ_j Y_ij log softmax(F_i)_j
                                                                G = (softmax(F) - Y) / n
                           (Y one-hot or class probabilities; the frontend turns labels into one-hot)
            bce            L = (1/nk) Σ [ softplus(F) - Y F ]   G = (sigmoid(F) - Y) / nk
                           (binary cross-entropy on the logits F, computed stably)

        ``value`` is a Python float, or a 0-d array of the backend (``float(value)`` reads it).
        """
        args = self._args("loss")
        name = args.loss(name)
        args.input("F", F, ndim=2)
        args.input("Y", Y, shape=F.shape)
        G = args.output("G", G, F.shape)
        return self._loss(name, F, Y, G), G

    def _loss(self, name, F, Y, G):
        """Writes G and returns the value."""
        self._missing("loss")

    def weight_penalty(self, W, dW, l1, l2):
        """Adds the L1/L2 penalty's gradient to dW in place and returns the penalty's value.

            penalty = l1 Σ|W| + (l2/2) Σ W²          dW += l1 sign(W) + l2 W
        """
        args = self._args("weight_penalty")
        args.input("W", W)
        args.updated("dW", dW, W.shape)
        l1 = args.number("l1", l1, low=0.0)
        l2 = args.number("l2", l2, low=0.0)
        return self._weight_penalty(W, dW, l1, l2)

    def _weight_penalty(self, W, dW, l1, l2):
        self._missing("weight_penalty")

    # ---- optimizer updates, in place --------------------------------------------------

    def sgd_update(self, param, grad, velocity, lr, momentum=0.0, nesterov=False):
        """SGD with momentum, in place (PyTorch's form):

            v = momentum v + g;   step = g + momentum v if nesterov else v;   param -= lr step

        ``velocity`` may be None when momentum == 0 (plain gradient descent: param -= lr g).
        """
        args = self._args("sgd_update")
        args.input("grad", grad)
        args.updated("param", param, grad.shape)
        lr = args.number("lr", lr, low=0.0)
        momentum = args.number("momentum", momentum, low=0.0, high=1.0, high_open=True)
        if velocity is None:
            if momentum != 0.0:
                args.fail(ValueError, f"momentum = {momentum} needs a velocity array")
        else:
            args.updated("velocity", velocity, grad.shape)
        self._sgd_update(param, grad, velocity, lr, momentum, bool(nesterov))

    def _sgd_update(self, param, grad, velocity, lr, momentum, nesterov):
        self._missing("sgd_update")

    def adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, step):
        """Adam, in place (Kingma & Ba, Algorithm 1; ``step`` counts from 1):

            m = β1 m + (1-β1) g;   v = β2 v + (1-β2) g²
            m̂ = m / (1-β1^step);   v̂ = v / (1-β2^step);   param -= lr m̂ / (sqrt(v̂) + eps)
        """
        args = self._args("adam_update")
        args.input("grad", grad)
        args.updated("param", param, grad.shape)
        args.updated("m", m, grad.shape)
        args.updated("v", v, grad.shape)
        lr = args.number("lr", lr, low=0.0)
        beta1 = args.number("beta1", beta1, low=0.0, high=1.0, high_open=True)
        beta2 = args.number("beta2", beta2, low=0.0, high=1.0, high_open=True)
        eps = args.number("eps", eps, low=0.0, low_open=True)
        if isinstance(step, bool) or int(step) != step or step < 1:
            args.fail(ValueError, f"step counts from 1; got {step!r}")
        self._adam_update(param, grad, m, v, lr, beta1, beta2, eps, int(step))

    def _adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, step):
        self._missing("adam_update")


    # ---- derivatives with respect to the inputs (Taylor mode) -------------------------

    def taylor_forward(self, X, Ws, bs, activations, first, second=()):
        """The network's output and its first and second derivatives w.r.t. the inputs.

        X: n x d, Ws[l]: p_l x p_{l+1}, bs[l]: p_{l+1}, activations[l] the activation of layer
        l's output (the whole network in one call). ``first``: k1 distinct input indices i;
        ``second``: k2 pairs (i, j) of input indices, each of which must be in ``first`` (a
        second-derivative stream needs both first-derivative streams). Per layer, with
        act' and act'' written from the output A':

            H = A W + b           Ḣ_i = Ȧ_i W           Ḧ_ij = Ä_ij W
            A' = act(H)           Ȧ'_i = act'(H) ⊙ Ḣ_i
            Ä'_ij = act''(H) ⊙ Ḣ_i ⊙ Ḣ_j + act'(H) ⊙ Ḧ_ij

        starting from A_0 = X, Ȧ_i = e_i (a one-hot row per sample), Ä_ij = 0.

            tanh      act' = 1 - A²        act'' = -2 A act'          act''' = act' (6A² - 2)
            sigmoid   act' = A (1 - A)     act'' = act' (1 - 2A)      act''' = act' (1 - 6A + 6A²)
            identity  1, 0, 0;   relu, leaky_relu: act' piecewise, act'' = act''' = 0

        Returns (F, dF, d2F, saved): F n x p_L, dF k1 x n x p_L (dF[a] = dF/dx_{first[a]}),
        d2F k2 x n x p_L (d2F[q] = d²F/dx_i dx_j for second[q] = (i, j)), and a ``TaylorSaved``
        for ``taylor_backward``. relu and leaky_relu have act'' = 0 almost everywhere: second
        derivatives through them are refused (ValueError).
        """
        args = self._args("taylor_forward")
        args.input("X", X, ndim=2)
        Ws, bs, activations = self._taylor_layers(args, Ws, bs, activations, X.shape[1])
        first, pairs = self._taylor_directions(args, first, second, X.shape[1], activations)
        saved = self._taylor_buffers(X, Ws, first, pairs)
        self._taylor_forward(Ws, bs, activations, saved)
        L = len(Ws)
        return saved.As[L], saved.dAs[L], saved.d2As[L], saved

    def _taylor_buffers(self, X, Ws, first, pairs):
        """The TaylorSaved that ``_taylor_forward`` fills: one buffer per layer,
        [A; Ȧ_1..Ȧ_k1; Ä_1..Ä_k2] (the input's: [Ȧ; Ä], As[0] is X itself)."""
        n = X.shape[0]
        k1, k2 = len(first), len(pairs)
        widths = [X.shape[1]] + [W.shape[1] for W in Ws]
        stacks = self.reusable([(k1 + k2, n, widths[0])] + [(1 + k1 + k2, n, w) for w in widths[1:]],
                               X.dtype)
        As = [X] + [S[0] for S in stacks[1:]]
        dAs = [stacks[0][:k1]] + [S[1:1 + k1] for S in stacks[1:]]
        d2As = [stacks[0][k1:]] + [S[1 + k1:] for S in stacks[1:]]
        return TaylorSaved(As, dAs, d2As, first, pairs)

    def _taylor_forward(self, Ws, bs, activations, saved):
        """Writes saved.As[1:], saved.dAs, saved.d2As (saved.As[0] is X)."""
        self._missing("taylor_forward")

    def taylor_backward(self, saved, Ws, activations, G, dG=None, d2G=None, dWs=None, dbs=None):
        """The weight and bias gradients through ``taylor_forward``'s network.

        G = dLoss/dF (n x p_L), dG = dLoss/d(dF) (k1 x n x p_L), d2G = dLoss/d(d2F)
        (k2 x n x p_L; None: zero). Per layer, from the last, with σ1, σ2, σ3 = act', act'',
        act''' at H (written from the output A') and the gradients G_A, Ġ_i, G̈_ij arriving at
        A', Ȧ'_i, Ä'_ij:

            G̈H_ij = σ1 ⊙ G̈_ij
            ĠH_i  = σ1 ⊙ Ġ_i + Σ_{(i,j)} σ2 ⊙ Ḣ_j ⊙ G̈_ij + Σ_{(j,i)} σ2 ⊙ Ḣ_j ⊙ G̈_ji
            GH    = σ1 ⊙ G_A + Σ_i σ2 ⊙ Ḣ_i ⊙ Ġ_i + Σ_ij (σ3 ⊙ Ḣ_i ⊙ Ḣ_j + σ2 ⊙ Ḧ_ij) ⊙ G̈_ij
            dW    = Aᵀ GH + Σ_i Ȧ_iᵀ ĠH_i + Σ_ij Ä_ijᵀ G̈H_ij        db = 1ᵀ GH
            G_A ← GH Wᵀ,   Ġ_i ← ĠH_i Wᵀ,   G̈_ij ← G̈H_ij Wᵀ          (the previous layer's)

        (db has only the GH term: Ḣ and Ḧ carry no bias.) Returns (dWs, dbs), lists shaped as
        Ws and the biases (allocated when None).
        """
        args = self._args("taylor_backward")
        if not isinstance(saved, TaylorSaved):
            args.fail(TypeError, f"saved must be the TaylorSaved that taylor_forward returned; "
                                 f"got {type(saved).__name__}")
        L = len(saved.As) - 1
        if not isinstance(Ws, (list, tuple)) or len(Ws) != L:
            args.fail(ValueError, f"Ws must be the {L} weight matrices taylor_forward saw")
        for l, W in enumerate(Ws):
            args.input(f"Ws[{l}]", W, shape=(saved.As[l].shape[1], saved.As[l + 1].shape[1]))
        if isinstance(activations, str) or len(activations) != L:
            args.fail(ValueError, f"give one activation per layer ({L})")
        activations = [args.activation(a) for a in activations]
        F = saved.As[L]
        k1, k2 = len(saved.first), len(saved.second)
        args.input("G", G, shape=F.shape)
        dG = self._taylor_stream_gradient(args, "dG", dG, (k1,) + tuple(F.shape))
        d2G = self._taylor_stream_gradient(args, "d2G", d2G, (k2,) + tuple(F.shape))
        if dWs is None:
            dWs = [None] * L
        if dbs is None:
            dbs = [None] * L
        if len(dWs) != L or len(dbs) != L:
            args.fail(ValueError, f"dWs and dbs must be lists of {L} arrays (or None)")
        dWs = [args.output(f"dWs[{l}]", dW, Ws[l].shape) for l, dW in enumerate(dWs)]
        dbs = [args.output(f"dbs[{l}]", db, (Ws[l].shape[1],)) for l, db in enumerate(dbs)]
        self._taylor_backward(saved, list(Ws), activations, G, dG, d2G, dWs, dbs)
        return dWs, dbs

    def _taylor_backward(self, saved, Ws, activations, G, dG, d2G, dWs, dbs):
        """Writes dWs and dbs (dG, d2G are arrays: zeros where the caller gave None)."""
        self._missing("taylor_backward")

    # the checks the two Taylor kernels share

    def _taylor_layers(self, args, Ws, bs, activations, d):
        if not isinstance(Ws, (list, tuple)) or not isinstance(bs, (list, tuple)) or not Ws:
            args.fail(TypeError, "Ws and bs must be non-empty lists of arrays (one per layer)")
        if isinstance(activations, str) or len(activations) != len(Ws) or len(bs) != len(Ws):
            args.fail(ValueError, f"{len(Ws)} weight matrices and {len(bs)} biases: give one "
                                  "weight matrix, bias and activation per layer")
        p = d
        for l, (W, b) in enumerate(zip(Ws, bs)):
            args.input(f"Ws[{l}]", W, ndim=2)
            if W.shape[0] != p:
                args.fail(ValueError, f"Ws[{l}] {tuple(W.shape)} does not chain: its input has "
                                      f"{p} columns")
            p = W.shape[1]
            args.input(f"bs[{l}]", b, shape=(p,))
        return list(Ws), list(bs), [args.activation(a) for a in activations]

    def _taylor_directions(self, args, first, second, d, activations):
        def index(i, what):
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < d:
                args.fail(ValueError, f"{what}: input index {i!r} does not exist (the input has "
                                      f"{d} columns: 0..{d - 1})")
            return int(i)
        first = tuple(index(i, "first") for i in first)
        if len(set(first)) != len(first):
            args.fail(ValueError, f"first has repeated input indices: {first}")
        pairs = []
        for pair in second:
            if isinstance(pair, (str, bytes)) or len(pair) != 2:
                args.fail(ValueError, f"second: each entry is a pair (i, j) of input indices; "
                                      f"got {pair!r}")
            i, j = (index(x, "second") for x in pair)
            if i not in first or j not in first:
                args.fail(ValueError, f"second: the pair ({i}, {j}) needs the first-derivative "
                                      f"streams of both inputs; first is {first}")
            pairs.append((first.index(i), first.index(j)))
        if pairs:
            flat = [a for a in activations if a in ("relu", "leaky_relu")]
            if flat:
                args.fail(ValueError, f"second derivatives through {flat[0]} are refused: its "
                                      "second derivative is 0 almost everywhere (undefined at 0), "
                                      "so d²F would say nothing; use tanh, sigmoid or identity")
        return first, tuple(pairs)

    def _taylor_stream_gradient(self, args, label, x, shape):
        if x is None:
            return self.zeros(shape, args.dtype)
        if tuple(x.shape) != tuple(shape):
            args.fail(ValueError, f"{label} must have shape {tuple(shape)} (one n x p_L gradient "
                                  f"per stream); got {tuple(x.shape)}")
        if shape[0] == 0:
            return x
        return args.input(label, x, shape=shape)
