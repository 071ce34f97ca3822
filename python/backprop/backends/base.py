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
returns; with ``out=None`` the kernel allocates. The elementwise kernels (``activation_forward``,
``activation_backward``, ``dropout``) accept an ``out`` that is the same array as their first
input (in place); no other kernel's output may alias its inputs. Shapes and dtypes are checked by the frontend
before a kernel runs (see ``backprop._checks``); a kernel may assume them.

A backend that lacks a kernel raises ``NotImplementedError`` naming the kernel and the backend:
nothing falls back to another backend silently.
"""

from __future__ import annotations

ACTIVATIONS = ("tanh", "sigmoid", "relu", "leaky_relu", "identity")
LOSSES = ("sse", "mse", "cross_entropy", "bce")
LEAKY_SLOPE = 0.01

# The kernel vocabulary, in the order base.py defines it. Tests walk this list.
KERNELS = (
    "asarray", "to_numpy", "zeros", "empty", "synchronize",
    "gemm", "dense_forward", "dense_backward",
    "activation_forward", "activation_backward", "colsum", "dropout",
    "loss", "weight_penalty", "sgd_update", "adam_update",
)


class BackendUnavailable(RuntimeError):
    """A backend cannot run on this machine (not built, no GPU, CuPy missing); says why."""


class Backend:
    """The protocol. Subclasses override every kernel; this class only documents them."""

    name = "base"

    def _missing(self, kernel):
        raise NotImplementedError(f"backend {self.name!r} does not implement kernel {kernel!r}")

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

    # ---- the matrix product -----------------------------------------------------------

    def gemm(self, A, B, out=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
        """C = alpha op(A) op(B) + beta C, op(X) = Xᵀ if trans_X else X.

        op(A): m x k, op(B): k x n, C: m x n. With ``beta != 0`` ``out`` must be given and holds C.
        """
        self._missing("gemm")

    # ---- one dense layer --------------------------------------------------------------

    def dense_forward(self, A, W, b, activation, out=None):
        """A_next = act(A W + b).

        A: n x p_in, W: p_in x p_out, b: p_out  ->  A_next: n x p_out.
        The product, the bias (broadcast over rows) and the activation; fused where possible.
        """
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
        self._missing("dense_backward")

    # ---- elementwise and reductions ---------------------------------------------------

    def activation_forward(self, H, activation, out=None):
        """A = act(H), elementwise."""
        self._missing("activation_forward")

    def activation_backward(self, dA, A, activation, out=None):
        """G = dA ⊙ act'(A), elementwise, the derivative taken from the activation's output A."""
        self._missing("activation_backward")

    def colsum(self, G, out=None):
        """db = 1ᵀ G: the sum over rows (samples) of an n x p array, a p-vector."""
        self._missing("colsum")

    def dropout(self, A, M, out=None):
        """A ⊙ M, with M the inverted-dropout mask: 0 where dropped, 1/(1-p) where kept.

        The same kernel applies the mask forward (to A) and backward (to dLoss/dA).
        """
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
        self._missing("loss")

    def weight_penalty(self, W, dW, l1, l2):
        """Adds the L1/L2 penalty's gradient to dW in place and returns the penalty's value.

            penalty = l1 Σ|W| + (l2/2) Σ W²          dW += l1 sign(W) + l2 W
        """
        self._missing("weight_penalty")

    # ---- optimizer updates, in place --------------------------------------------------

    def sgd_update(self, param, grad, velocity, lr, momentum=0.0, nesterov=False):
        """SGD with momentum, in place (PyTorch's form):

            v = momentum v + g;   step = g + momentum v if nesterov else v;   param -= lr step

        ``velocity`` may be None when momentum == 0 (plain gradient descent: param -= lr g).
        """
        self._missing("sgd_update")

    def adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, step):
        """Adam, in place (Kingma & Ba, Algorithm 1; ``step`` counts from 1):

            m = β1 m + (1-β1) g;   v = β2 v + (1-β2) g²
            m̂ = m / (1-β1^step);   v̂ = v / (1-β2^step);   param -= lr m̂ / (sqrt(v̂) + eps)
        """
        self._missing("adam_update")
