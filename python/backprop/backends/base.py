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

from .checks import KernelArgs
from .names import ACTIVATIONS, LEAKY_SLOPE, LOSSES  # noqa: F401  (re-exported)
from .taylor_protocol import TaylorKernels, TaylorSaved  # noqa: F401  (TaylorSaved re-exported)

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


class BackendUnavailable(RuntimeError):
    """A backend cannot run on this machine (not built, no GPU, CuPy missing); says why."""


class Backend(TaylorKernels):
    """The protocol. The public kernels check their arguments and allocate missing outputs here,
    once for every backend, then call the backend's ``_<kernel>`` (which a subclass overrides)."""

    name = "base"

    # A backend is a service, not data: it is known by its name (the registry makes one object
    # per name, which holds the backend's scratch memory and compiled kernels). A copy of a model
    # (pickle, copy.deepcopy, joblib, scikit-learn's clone) therefore shares the registry's
    # object instead of making another, which would keep memory of its own and refuse the
    # Tensors of the registry's backend as "on a different backend".

    def __reduce_ex__(self, protocol):
        """The registry's backend of this name, when this object is it; else pickled as is."""
        from . import _INSTANCES, get_backend  # the registry, above this module
        if _INSTANCES.get(self.name) is self:
            return (get_backend, (self.name,))
        return super().__reduce_ex__(protocol)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

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
