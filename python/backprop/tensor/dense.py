"""The dense layer as one Tensor node, and the MLP as a function of Tensors.

    forward   A_next = act(A W + b)                       the backend's dense_forward
    backward  G = A_next.grad ⊙ act'(A_next)              activation_backward (from the output)
              W.grad += Aᵀ G;  b.grad += 1ᵀ G;  A.grad += G Wᵀ      the backend's dense_backward

in loops (McAllester's form, n samples, i inputs, j outputs):

    for n, j:      H[n, j] = b[j];   for n, i, j:  H[n, j] += A[n, i] W[i, j];   A_next = act(H)
    backprop:  for n, j: G[n, j] = A_next.grad[n, j] act'(A_next[n, j])
               for n, i, j:  W.grad[i, j] += A[n, i] G[n, j];  A.grad[n, i] += G[n, j] W[i, j]
               for n, j:     b.grad[j] += G[n, j]

Under create_graph the same backward is written with Tensor operations (two products, a column
sum and the activation derivative written from A_next), so it can be differentiated again.

``net(X)`` records one such node per layer; ``net.parameters()`` are the Tensors W_0, b_0, W_1, ...
whose ``value`` is the model's own array (an update of the model is an update of the Tensor).
"""

from __future__ import annotations

from .core import Tensor, _fail, as_tensor, backward_of, leaf, result
from .kernels import kernels_of
from .ops_elementwise import activation_derivative


def _c(t):
    v = t.value
    return v if v.flags.c_contiguous else t.backend.asarray(v, v.dtype)


def dense(A, W, b, activation="identity"):
    """A_next = act(A W + b) as one node (A: n x p_in, W: p_in x p_out, b: p_out)."""
    if not isinstance(W, Tensor):
        _fail("dense", TypeError, "W must be a Tensor")
    be = W.backend
    if type(A) is not Tensor or A.backend is not be or A.value.dtype != W.value.dtype:
        A = as_tensor(A, W, "dense")
    if type(b) is not Tensor or b.backend is not be or b.value.dtype != W.value.dtype:
        b = as_tensor(b, W, "dense")
    a, w = A.value, W.value
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[0] or b.value.shape != (w.shape[1],):
        _fail("dense", ValueError, f"A {A.shape}, W {W.shape} and b {b.shape} do not chain "
                                   "(A: n x p_in, W: p_in x p_out, b: p_out)")
    try:
        backward = _DENSE_BACKWARD[activation]
    except KeyError:
        _fail("dense", ValueError, f"unknown activation {activation!r}")
    value = kernels_of(be).dense_forward(_c(A), _c(W), _c(b), activation)
    return result(value, be, (A, W, b), backward, activation)


def _make_dense_backward(name):
    @backward_of(f"dense[{name}]")
    def backward(out, g, graph):
        A, W, b = out._parents
        if graph:
            G = g if name == "identity" else g * activation_derivative(out, name)
            return (G @ W.transpose() if A.requires_grad else None,
                    A.transpose() @ G if W.requires_grad else None,
                    G.sum(axis=0) if b.requires_grad else None)
        k = kernels_of(out.backend)
        if not g.flags.c_contiguous:
            g = out.backend.asarray(g, g.dtype)
        G = g if name == "identity" else k.activation_backward(g, out.value, name)
        dW, db, dA = k.dense_backward(G, _c(A), _c(W), None, need_G_prev=A.requires_grad)
        return dA, dW, db
    return backward


_DENSE_BACKWARD = {name: _make_dense_backward(name)
                   for name in ("tanh", "sigmoid", "relu", "leaky_relu", "identity")}


# ---- the MLP as a function of Tensors -------------------------------------------------------

def parameters(net):
    """[W_0, b_0, W_1, b_1, ...] as Tensors (requires_grad) sharing memory with the model
    (``MLP.parameters``)."""
    return net.parameters()


def _input(net, X, standardize=True):
    """X as a Tensor of the model's backend and dtype, standardized when the model has a
    Standardizer (unless ``standardize`` is False). An array is checked, standardized in float64
    and cast as ``predict`` does (``MLP.input_array``); a Tensor is standardized by recorded
    operations in its dtype, so gradients reach it."""
    if not isinstance(X, Tensor):
        return leaf(net.input_array(X, standardize=standardize), net.backend)
    if X.backend is not net.backend:
        _fail("net(X)", TypeError, f"X is on backend {X.backend.name!r} but the model on "
                                   f"{net.backend.name!r}")
    if X.value.dtype != net.dtype:
        _fail("net(X)", TypeError, f"X has dtype {X.value.dtype} but the model {net.dtype}")
    if X.value.ndim != 2 or X.value.shape[1] != net.layers[0]:
        _fail("net(X)", ValueError, f"X must be n x {net.layers[0]}; got shape {X.shape}")
    if standardize and net.standardizer is not None:
        mean = net.backend.asarray(net.standardizer.mean, net.dtype)
        scale = net.backend.asarray(net.standardizer.scale, net.dtype)
        X = (X - mean) / scale
    return X


def forward(net, X, standardize=True):
    """F = net(X) as a Tensor: one dense node per layer (its forward dense_forward, its backward
    dense_backward); ``standardize`` as ``_input``."""
    A = _input(net, X, standardize)
    params = parameters(net)
    for l, act in enumerate(net.layer_activations):
        A = dense(A, params[2 * l], params[2 * l + 1], act)
    return A
