"""The backend kernels the Tensor layer calls, with its outputs allocated here.

A Tensor operation already knows its shapes and dtypes (its operands were checked when it was
made), so on the library's backends it calls the backend's unchecked ``_<kernel>`` implementation
with every output given (the protocol of base.py); a backend from elsewhere gets the public,
checked kernel. Either way the numbers are the backend's.
"""

from __future__ import annotations

_FAST = ("NumpyBackend", "CpuBackend", "CudaBackend")


def _c(be, x):
    """x as a C-contiguous array (the kernels' layout); views such as transposes are copied."""
    return x if x.flags.c_contiguous else be.asarray(x, x.dtype)


class Kernels:
    """gemm, dense_forward, dense_backward, activation_forward/backward, loss and the Taylor
    kernels for one backend."""

    def __init__(self, backend):
        self.backend = backend
        self.fast = type(backend).__name__ in _FAST

    def gemm(self, A, B, trans_a=False, trans_b=False):
        """op(A) op(B), a new array."""
        be = self.backend
        if not self.fast:
            return be.gemm(_c(be, A), _c(be, B), trans_a=trans_a, trans_b=trans_b)
        A, B = _c(be, A), _c(be, B)
        m = A.shape[1] if trans_a else A.shape[0]
        n = B.shape[0] if trans_b else B.shape[1]
        out = be.empty((m, n), A.dtype)
        return be._gemm(A, B, out, trans_a, trans_b, 1.0, 0.0)

    def dense_forward(self, A, W, b, activation):
        be = self.backend
        if not self.fast:
            return be.dense_forward(A, W, b, activation)
        out = be.empty((A.shape[0], W.shape[1]), A.dtype)
        return be._dense_forward(A, W, b, activation, out)

    def dense_backward(self, G, A_prev, W, activation_prev, need_G_prev=True):
        be = self.backend
        if not self.fast:
            return be.dense_backward(G, A_prev, W, activation_prev, need_G_prev=need_G_prev)
        dtype = G.dtype
        dW = be.empty(W.shape, dtype)
        db = be.empty((W.shape[1],), dtype)
        G_prev = be.empty(A_prev.shape, dtype) if need_G_prev else None
        be._dense_backward(G, A_prev, W, activation_prev, dW, db, G_prev)
        return dW, db, G_prev

    def activation_forward(self, H, activation):
        be = self.backend
        if not self.fast:
            return be.activation_forward(H, activation)
        return be._activation_forward(H, activation, be.empty(H.shape, H.dtype))

    def activation_backward(self, dA, A, activation):
        be = self.backend
        if not self.fast:
            return be.activation_backward(dA, A, activation)
        return be._activation_backward(dA, A, activation, be.empty(dA.shape, dA.dtype))

    def sgd_update(self, param, grad, lr):
        """param -= lr grad, in place (plain gradient descent)."""
        be = self.backend
        if not self.fast:
            return be.sgd_update(param, grad, None, lr)
        be._sgd_update(param, _c(be, grad), None, float(lr), 0.0, False)

    def taylor_forward(self, X, Ws, bs, activations, first, second):
        """(F, dF, d2F, saved) of the backend's taylor_forward. The spec (``first``, ``second``:
        input indices) is checked here as the public kernel checks it, relu refused for second
        derivatives included; the model's own arrays need no check."""
        be = self.backend
        if not self.fast:
            return be.taylor_forward(X, Ws, bs, activations, first, second)
        first, pairs = be._taylor_directions(be._args("taylor_forward"), first, second,
                                             X.shape[1], activations)
        saved = be._taylor_buffers(X, Ws, first, pairs)
        be._taylor_forward(Ws, bs, activations, saved)
        L = len(Ws)
        return saved.As[L], saved.dAs[L], saved.d2As[L], saved

    def taylor_backward(self, saved, Ws, activations, G, dG, d2G):
        """(dWs, dbs) of the backend's taylor_backward; G, dG, d2G as that kernel takes them,
        C-contiguous arrays of the model's dtype (made so by the Tensor node)."""
        be = self.backend
        if not self.fast:
            return be.taylor_backward(saved, Ws, activations, G, dG, d2G)
        dtype = G.dtype
        dWs = [be.empty(W.shape, dtype) for W in Ws]
        dbs = [be.empty((W.shape[1],), dtype) for W in Ws]
        be._taylor_backward(saved, list(Ws), list(activations), G, dG, d2G, dWs, dbs)
        return dWs, dbs

    def loss(self, name, F, Y):
        """(value as a float, G) of the backend's loss kernel."""
        be = self.backend
        if not self.fast:
            value, G = be.loss(name, F, Y)
            return value, G
        G = be.empty(F.shape, F.dtype)
        return be._loss(name, F, Y, G), G


def kernels_of(backend):
    """The Kernels of ``backend``, kept on the backend object itself: a module-level cache keyed
    by backend would keep every backend object ever seen (and its scratch memory) alive."""
    try:
        return backend.__dict__["_tensor_kernels"]
    except KeyError:
        k = backend.__dict__["_tensor_kernels"] = Kernels(backend)
        return k
    except AttributeError:  # a backend without a __dict__ (__slots__): made per call
        return Kernels(backend)
