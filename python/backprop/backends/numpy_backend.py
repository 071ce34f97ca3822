"""The numpy backend: the reference. Each kernel is the seed's equation, line for line.

Every other backend is tested against this one, and this one is judged by a float64
finite-difference gradient check (``backprop.gradcheck``). No tricks here: speed lives in the
``cpu`` and ``cuda`` backends.
"""

from __future__ import annotations

import numpy as np

from .base import LEAKY_SLOPE, Backend


def _into(out, value):
    """Writes ``value`` into ``out`` when a buffer was given, else returns ``value``."""
    if out is None:
        return value
    out[...] = value
    return out


class HostMemory:
    """The memory kernels of a backend whose arrays are numpy arrays in host memory."""

    def asarray(self, x, dtype):
        """A C-contiguous array of ``dtype`` holding x (no copy when x already is one)."""
        return np.ascontiguousarray(x, dtype=dtype)

    def to_numpy(self, x):
        return np.asarray(x)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype=dtype)

    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def synchronize(self):
        pass


class NumpyBackend(HostMemory, Backend):
    name = "numpy"

    # ---- the matrix product -----------------------------------------------------------

    # C = alpha op(A) op(B) + beta C        op(A): m x k, op(B): k x n, C: m x n
    def gemm(self, A, B, out=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
        opA = A.T if trans_a else A
        opB = B.T if trans_b else B
        C = alpha * (opA @ opB)
        if beta != 0.0:
            C = C + beta * out
        return _into(out, C.astype(A.dtype, copy=False))

    # ---- one dense layer --------------------------------------------------------------

    # A_next = act(A W + b)       A: n x p_in, W: p_in x p_out, b: p_out -> n x p_out
    def dense_forward(self, A, W, b, activation, out=None):
        H = A @ W + b
        return self.activation_forward(H, activation, out=out)

    # dW = A_prevᵀ G              p_in x p_out
    # db = 1ᵀ G                   p_out
    # G_prev = act'(A_prev) ⊙ (G Wᵀ)   n x p_in
    def dense_backward(self, G, A_prev, W, activation_prev, dW=None, db=None, G_prev=None,
                       need_G_prev=True):
        dW = _into(dW, A_prev.T @ G)
        db = self.colsum(G, out=db)
        if not need_G_prev:
            return dW, db, None
        dA_prev = G @ W.T
        if activation_prev is None:
            return dW, db, _into(G_prev, dA_prev)
        return dW, db, self.activation_backward(dA_prev, A_prev, activation_prev, out=G_prev)

    # ---- elementwise and reductions ---------------------------------------------------

    # A = act(H)
    def activation_forward(self, H, activation, out=None):
        if activation == "tanh":
            A = np.tanh(H)
        elif activation == "sigmoid":
            A = 1.0 / (1.0 + np.exp(-H))
        elif activation == "relu":
            A = np.maximum(H, 0)
        elif activation == "leaky_relu":
            A = np.where(H > 0, H, LEAKY_SLOPE * H)
        elif activation == "identity":
            A = H.copy() if out is None else H
        else:
            raise ValueError(f"unknown activation {activation!r}")
        return _into(out, A.astype(H.dtype, copy=False))

    # G = dA ⊙ act'(A), the derivative written with the activation's output A
    def activation_backward(self, dA, A, activation, out=None):
        if activation == "tanh":
            dact = 1 - A * A
        elif activation == "sigmoid":
            dact = A * (1 - A)
        elif activation == "relu":
            dact = (A > 0).astype(A.dtype)
        elif activation == "leaky_relu":
            dact = np.where(A > 0, 1.0, LEAKY_SLOPE).astype(A.dtype)
        elif activation == "identity":
            dact = 1
        else:
            raise ValueError(f"unknown activation {activation!r}")
        return _into(out, (dA * dact).astype(dA.dtype, copy=False))

    # db = 1ᵀ G                   n x p -> p
    def colsum(self, G, out=None):
        return _into(out, G.sum(axis=0))

    # A ⊙ M                       M: 0 (dropped) or 1/(1-p) (kept)
    def dropout(self, A, M, out=None):
        return _into(out, A * M)

    # ---- losses -----------------------------------------------------------------------

    def loss(self, name, F, Y, G=None):
        if name == "sse":
            return self._sse(F, Y, G)
        if name == "mse":
            return self._mse(F, Y, G)
        if name == "cross_entropy":
            return self._cross_entropy(F, Y, G)
        if name == "bce":
            return self._bce(F, Y, G)
        raise ValueError(f"unknown loss {name!r}")

    # L = ½ Σ (F - Y)²            G = F - Y
    def _sse(self, F, Y, G):
        R = F - Y
        return 0.5 * float(np.sum(R * R)), _into(G, R)

    # L = (1/nk) Σ (F - Y)²       G = 2 (F - Y) / nk
    def _mse(self, F, Y, G):
        R = F - Y
        return float(np.mean(R * R)), _into(G, (2.0 / R.size) * R)

    # P = softmax(F) row-wise (max subtracted), L = -(1/n) Σ Y ⊙ log P,   G = (P - Y) / n
    def _cross_entropy(self, F, Y, G):
        n = F.shape[0]
        Z = F - F.max(axis=1, keepdims=True)
        logP = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
        value = -float(np.sum(Y * logP)) / n
        return value, _into(G, (np.exp(logP) - Y) / n)

    # L = (1/nk) Σ [max(F,0) - Y F + log(1 + exp(-|F|))]   G = (sigmoid(F) - Y) / nk
    def _bce(self, F, Y, G):
        size = F.size
        value = float(np.sum(np.maximum(F, 0) - Y * F + np.log1p(np.exp(-np.abs(F))))) / size
        S = 1.0 / (1.0 + np.exp(-F))
        return value, _into(G, (S - Y) / size)

    # penalty = l1 Σ|W| + (l2/2) Σ W²        dW += l1 sign(W) + l2 W
    def weight_penalty(self, W, dW, l1, l2):
        dW += l1 * np.sign(W) + l2 * W
        return l1 * float(np.sum(np.abs(W))) + 0.5 * l2 * float(np.sum(W * W))

    # ---- optimizer updates, in place --------------------------------------------------

    # v = μ v + g;  step = g + μ v (nesterov) or v;  param -= lr step
    def sgd_update(self, param, grad, velocity, lr, momentum=0.0, nesterov=False):
        if velocity is None:
            param -= lr * grad
            return
        velocity *= momentum
        velocity += grad
        step = grad + momentum * velocity if nesterov else velocity
        param -= lr * step

    # m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²;  param -= lr m̂ / (sqrt(v̂) + eps)
    def adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, step):
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad * grad
        m_hat = m / (1 - beta1 ** step)
        v_hat = v / (1 - beta2 ** step)
        param -= (lr * m_hat / (np.sqrt(v_hat) + eps)).astype(param.dtype, copy=False)
