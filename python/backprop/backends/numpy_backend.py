"""The numpy backend: the reference. Each kernel is the seed's equation, line for line.

Every other backend is tested against this one, and this one is judged by a float64
finite-difference gradient check (``backprop.gradcheck``). No tricks here: speed lives in the
``cpu`` and ``cuda`` backends.
"""

from __future__ import annotations

import numpy as np

from .base import LEAKY_SLOPE, Backend
from .reuse import BufferPool


def _sigmoid(H):
    """1 / (1 + exp(-H)) with no overflow: from e = exp(-|H|) <= 1, 1 / (1 + e) for H >= 0
    (the very numbers of the formula) and e / (1 + e) for H < 0 (the same up to rounding, and
    no exp(1000) = inf on the way to 0)."""
    e = np.exp(-np.abs(H))
    return np.where(H >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class HostMemory:
    """The memory kernels of a backend whose arrays are numpy arrays in host memory."""

    _pool = None

    def asarray(self, x, dtype):
        """A C-contiguous array of ``dtype`` holding x (no copy when x already is one)."""
        return np.ascontiguousarray(x, dtype=dtype)

    def to_numpy(self, x):
        return np.asarray(x)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype=dtype)

    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def reusable(self, shapes, dtype):
        """Arrays of these shapes for saved values, from memory reused once freed (reuse.py)."""
        if self._pool is None:
            self._pool = BufferPool()
        return self._pool.views(shapes, dtype)

    def synchronize(self):
        pass

    def is_array(self, x):
        return isinstance(x, np.ndarray) and not isinstance(x, np.ma.MaskedArray)

    def may_overlap(self, x, y):
        return np.may_share_memory(x, y)

    def same_buffer(self, x, y):
        return (x.__array_interface__["data"][0] == y.__array_interface__["data"][0]
                and x.shape == y.shape and x.dtype == y.dtype)


class NumpyBackend(HostMemory, Backend):
    """Each kernel writes its result into the output buffer the checked layer (base.py) gives it."""

    name = "numpy"

    # ---- the matrix product -----------------------------------------------------------

    # C = alpha op(A) op(B) + beta C        op(A): m x k, op(B): k x n, C: m x n
    def _gemm(self, A, B, out, trans_a, trans_b, alpha, beta):
        opA = A.T if trans_a else A
        opB = B.T if trans_b else B
        C = alpha * (opA @ opB)
        if beta != 0.0:
            C = C + beta * out
        out[...] = C
        return out

    # ---- one dense layer --------------------------------------------------------------

    # A_next = act(A W + b)       A: n x p_in, W: p_in x p_out, b: p_out -> n x p_out
    def _dense_forward(self, A, W, b, activation, out):
        H = A @ W + b
        return self._activation_forward(H, activation, out)

    # dW = A_prevᵀ G              p_in x p_out
    # db = 1ᵀ G                   p_out
    # G_prev = act'(A_prev) ⊙ (G Wᵀ)   n x p_in      (G_prev None: not wanted)
    def _dense_backward(self, G, A_prev, W, activation_prev, dW, db, G_prev):
        dW[...] = A_prev.T @ G
        self._colsum(G, db)
        if G_prev is None:
            return
        dA_prev = G @ W.T
        if activation_prev is None:
            G_prev[...] = dA_prev
        else:
            self._activation_backward(dA_prev, A_prev, activation_prev, G_prev)

    # ---- elementwise and reductions ---------------------------------------------------

    # A = act(H)
    def _activation_forward(self, H, activation, out):
        if activation == "tanh":
            A = np.tanh(H)
        elif activation == "sigmoid":
            A = _sigmoid(H)
        elif activation == "relu":
            A = np.maximum(H, 0)
        elif activation == "leaky_relu":
            A = np.where(H > 0, H, LEAKY_SLOPE * H)
        else:  # identity
            A = H
        out[...] = A
        return out

    # G = dA ⊙ act'(A), the derivative written with the activation's output A
    def _activation_backward(self, dA, A, activation, out):
        if activation == "tanh":
            dact = 1 - A * A
        elif activation == "sigmoid":
            dact = A * (1 - A)
        elif activation == "relu":
            dact = (A > 0).astype(A.dtype)
        elif activation == "leaky_relu":
            dact = np.where(A > 0, 1.0, LEAKY_SLOPE).astype(A.dtype)
        else:  # identity
            dact = 1
        out[...] = dA * dact
        return out

    # db = 1ᵀ G                   n x p -> p
    def _colsum(self, G, out):
        out[...] = G.sum(axis=0)
        return out

    # A ⊙ M                       M: 0 (dropped) or 1/(1-p) (kept)
    def _dropout(self, A, M, out):
        out[...] = A * M
        return out

    # ---- losses -----------------------------------------------------------------------

    def _loss(self, name, F, Y, G):
        return {"sse": self._sse, "mse": self._mse, "cross_entropy": self._cross_entropy,
                "bce": self._bce}[name](F, Y, G)

    # L = ½ Σ (F - Y)²            G = F - Y
    def _sse(self, F, Y, G):
        R = F - Y
        G[...] = R
        return 0.5 * float(np.sum(R * R))

    # L = (1/nk) Σ (F - Y)²       G = 2 (F - Y) / nk
    def _mse(self, F, Y, G):
        R = F - Y
        G[...] = (2.0 / R.size) * R
        return float(np.mean(R * R))

    # P = softmax(F) row-wise (max subtracted), L = -(1/n) Σ Y ⊙ log P,   G = (P - Y) / n
    def _cross_entropy(self, F, Y, G):
        n = F.shape[0]
        Z = F - F.max(axis=1, keepdims=True)
        logP = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
        G[...] = (np.exp(logP) - Y) / n
        return -float(np.sum(Y * logP)) / n

    # L = (1/nk) Σ [max(F,0) - Y F + log(1 + exp(-|F|))]   G = (sigmoid(F) - Y) / nk
    def _bce(self, F, Y, G):
        size = F.size
        S = _sigmoid(F)
        G[...] = (S - Y) / size
        return float(np.sum(np.maximum(F, 0) - Y * F + np.log1p(np.exp(-np.abs(F))))) / size

    # penalty = l1 Σ|W| + (l2/2) Σ W²        dW += l1 sign(W) + l2 W
    def _weight_penalty(self, W, dW, l1, l2):
        dW += l1 * np.sign(W) + l2 * W
        return l1 * float(np.sum(np.abs(W))) + 0.5 * l2 * float(np.sum(W * W))

    # ---- optimizer updates, in place --------------------------------------------------

    # v = μ v + g;  step = g + μ v (nesterov) or v;  param -= lr step
    def _sgd_update(self, param, grad, velocity, lr, momentum, nesterov):
        if velocity is None:
            param -= lr * grad
            return
        velocity *= momentum
        velocity += grad
        step = grad + momentum * velocity if nesterov else velocity
        param -= lr * step

    # m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²;  param -= lr m̂ / (sqrt(v̂) + eps)
    def _adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, step):
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad * grad
        m_hat = m / (1 - beta1 ** step)
        v_hat = v / (1 - beta2 ** step)
        param -= (lr * m_hat / (np.sqrt(v_hat) + eps)).astype(param.dtype, copy=False)

    # ---- derivatives with respect to the inputs (Taylor mode) -------------------------

    # σ1, σ2, σ3 = act'(H), act''(H), act'''(H), written from the output A = act(H)
    #   tanh      σ1 = 1 - A²       σ2 = -2 A σ1        σ3 = σ1 (6A² - 2)
    #   sigmoid   σ1 = A (1 - A)    σ2 = σ1 (1 - 2A)    σ3 = σ1 (1 - 6A + 6A²)
    #   identity  1, 0, 0;   relu, leaky_relu: σ1 piecewise, σ2 = σ3 = 0
    @staticmethod
    def _taylor_derivatives(A, activation):
        if activation == "tanh":
            s1 = 1 - A * A
            return s1, -2 * A * s1, s1 * (6 * A * A - 2)
        if activation == "sigmoid":
            s1 = A * (1 - A)
            return s1, s1 * (1 - 2 * A), s1 * (1 - 6 * A + 6 * A * A)
        zero = np.zeros((), A.dtype)
        if activation == "relu":
            return (A > 0).astype(A.dtype), zero, zero
        if activation == "leaky_relu":
            return np.where(A > 0, 1.0, LEAKY_SLOPE).astype(A.dtype), zero, zero
        return np.ones((), A.dtype), zero, zero  # identity

    # Per layer (streams k1 x n x p, k2 x n x p; pairs (a, c) index the first-derivative streams):
    #   H = A W + b,  Ḣ_a = Ȧ_a W,  Ḧ_q = Ä_q W
    #   A' = act(H),  Ȧ'_a = σ1 ⊙ Ḣ_a,  Ä'_q = σ2 ⊙ Ḣ_a ⊙ Ḣ_c + σ1 ⊙ Ḧ_q      (q = (a, c))
    # from A_0 = X, Ȧ_a = e_{first[a]} (one-hot rows), Ä_q = 0.
    def _taylor_forward(self, Ws, bs, activations, saved):
        As, dAs, d2As = saved.As, saved.dAs, saved.d2As
        dAs[0][...] = 0
        for a, i in enumerate(saved.first):
            dAs[0][a, :, i] = 1
        d2As[0][...] = 0
        for l, (W, b, act) in enumerate(zip(Ws, bs, activations)):
            H = As[l] @ W + b
            dH = dAs[l] @ W                                   # k1 x n x p'
            d2H = d2As[l] @ W                                 # k2 x n x p'
            self._activation_forward(H, act, As[l + 1])
            s1, s2, _ = self._taylor_derivatives(As[l + 1], act)
            dAs[l + 1][...] = s1 * dH
            for q, (a, c) in enumerate(saved.second):
                d2As[l + 1][q] = s2 * dH[a] * dH[c] + s1 * d2H[q]

    # Per layer, from the last (G_A, Ġ_a, G̈_q: the gradients at A', Ȧ'_a, Ä'_q):
    #   G̈H_q = σ1 ⊙ G̈_q
    #   ĠH_a = σ1 ⊙ Ġ_a + Σ_{q=(a,c)} σ2 ⊙ Ḣ_c ⊙ G̈_q + Σ_{q=(c,a)} σ2 ⊙ Ḣ_c ⊙ G̈_q
    #   GH   = σ1 ⊙ G_A + Σ_a σ2 ⊙ Ḣ_a ⊙ Ġ_a + Σ_q (σ3 ⊙ Ḣ_a ⊙ Ḣ_c + σ2 ⊙ Ḧ_q) ⊙ G̈_q
    #   dW   = Aᵀ GH + Σ_a Ȧ_aᵀ ĠH_a + Σ_q Ä_qᵀ G̈H_q                p x p'
    #   db   = 1ᵀ GH                                                 p'
    #   G_A ← GH Wᵀ,  Ġ_a ← ĠH_a Wᵀ,  G̈_q ← G̈H_q Wᵀ                  (the layer below)
    def _taylor_backward(self, saved, Ws, activations, G, dG, d2G, dWs, dbs):
        As, dAs, d2As, pairs = saved.As, saved.dAs, saved.d2As, saved.second
        GA, dGA, d2GA = G, dG, d2G
        for l in range(len(Ws) - 1, -1, -1):
            W, A_out = Ws[l], As[l + 1]
            s1, s2, s3 = self._taylor_derivatives(A_out, activations[l])
            dH = dAs[l] @ W
            d2GH = s1 * d2GA
            dGH = s1 * dGA
            GH = s1 * GA + np.sum(s2 * dH * dGA, axis=0)
            if pairs:
                d2H = d2As[l] @ W
                for q, (a, c) in enumerate(pairs):
                    dGH[a] += s2 * dH[c] * d2GA[q]
                    dGH[c] += s2 * dH[a] * d2GA[q]
                    GH += (s3 * dH[a] * dH[c] + s2 * d2H[q]) * d2GA[q]
            dW = As[l].T @ GH
            for a in range(dGH.shape[0]):
                dW += dAs[l][a].T @ dGH[a]
            for q in range(d2GH.shape[0]):
                dW += d2As[l][q].T @ d2GH[q]
            dWs[l][...] = dW
            self._colsum(GH, dbs[l])
            if l > 0:
                GA, dGA, d2GA = GH @ W.T, dGH @ W.T, d2GH @ W.T
