"""Derivatives of an MLP with respect to its inputs, as one Tensor node (physics-informed losses).

    u, u_x, u_t, u_xx = bp.tensor.derivatives(net, X, first=("x", "t"), second=("xx",),
                                              names=("x", "t"))
    # or by input index:  first=(0, 1), second=((0, 0),)
    f = u_t + u * u_x - nu * u_xx          # a residual written with Tensors
    (f ** 2).mean().backward()             # into the model's parameter gradients

The spec: ``first`` lists inputs (an index 0..d-1, or a name from ``names``); ``second`` lists
pairs of inputs ((i, j) of indices or names, or a string such as "xt" that splits into two
names). The result is a tuple (u, du_1, ..., du_k1, d2u_1, ..., d2u_k2) of n x p_out Tensors,
in the order asked: du_a = ∂u/∂x_{first[a]}, d2u_q = ∂²u/∂x_i∂x_j for second[q] = (i, j).
An input or pair may be asked for more than once (first=(0, 0)): each is an output of its own,
and the gradients arriving at all of them add up in the backward.

Forward: the backend's ``taylor_forward`` (Taylor-mode streams through every layer, one call for
the whole network); backward: its ``taylor_backward`` (the gradients of all three kinds of
output into every W_l and b_l). X is a constant of this node: no gradient flows back to X.
With a Standardizer on the model, z = (x - mean) / scale, so ∂u/∂x_i = ∂u/∂z_i / scale_i and
∂²u/∂x_i∂x_j = ∂²u/∂z_i∂z_j / (scale_i scale_j). The node's backward is array code:
``create_graph=True`` through it raises NotImplementedError (use the recorded path,
``bp.grad(..., create_graph=True)``, for third derivatives).

The outputs are parts of one node: each output's backward hands its gradient to the node as a
``_Parts`` (output index -> array), and the tape adds those up by merging, so the node's backward
gets each output's gradient as it arrived, with no zero-filled array the size of all outputs.
"""

from __future__ import annotations

import numpy as np

from .. import _checks
from .core import Tensor, _fail, backward_of, is_backend_array, result
from .dense import parameters
from .kernels import kernels_of

_OP = "derivatives"


def _resolve_one(item, names, d):
    if isinstance(item, str):
        if names is None or item not in names:
            _fail(_OP, ValueError, f"unknown input {item!r}: "
                  + (f"names are {tuple(names)}" if names is not None else
                     "give names=(...) to use names, or input indices 0..%d" % (d - 1)))
        return names.index(item)
    if isinstance(item, bool) or not isinstance(item, (int, np.integer)) or not 0 <= item < d:
        _fail(_OP, ValueError, f"input index {item!r} does not exist (the input has {d} columns: "
                               f"0..{d - 1})")
    return int(item)


def _resolve_pair(item, names, d):
    if isinstance(item, str):
        splits = [(item[:k], item[k:]) for k in range(1, len(item))
                  if names is not None and item[:k] in names and item[k:] in names]
        if len(splits) != 1:
            _fail(_OP, ValueError, f"second derivative {item!r}: " +
                  ("ambiguous split into two names" if splits else
                   f"not two input names joined (names: {None if names is None else tuple(names)})"))
        item = splits[0]
    try:
        i, j = item
    except (TypeError, ValueError):
        _fail(_OP, ValueError, f"second derivative {item!r}: give a pair (i, j) of inputs")
    return _resolve_one(i, names, d), _resolve_one(j, names, d)


def resolve(first, second, names, d):
    """The spec as input indices: (first indices, second pairs)."""
    if names is not None:
        names = list(names)
        if len(names) != d or len(set(names)) != d or not all(isinstance(s, str) for s in names):
            _fail(_OP, ValueError, f"names must be {d} distinct strings, one per input column; "
                                   f"got {tuple(names)}")
    if isinstance(first, (str, int, np.integer)):
        first = (first,)
    if isinstance(second, str):
        second = (second,)
    return (tuple(_resolve_one(i, names, d) for i in first),
            tuple(_resolve_pair(p, names, d) for p in second))


def _inputs(net, X):
    be = net.backend
    if isinstance(X, Tensor):
        if X.backend is not be or X.value.dtype != net.dtype:
            _fail(_OP, TypeError, f"X is a {X.value.dtype} tensor on {X.backend.name!r}; the "
                                  f"model is {net.dtype} on {be.name!r}")
        X = X.value
    elif not (is_backend_array(be, X) and not isinstance(X, np.ndarray)):
        X = _checks.check_inputs(X, net.layers[0])
    if X.ndim != 2 or X.shape[1] != net.layers[0]:
        _fail(_OP, ValueError, f"X must be n x {net.layers[0]}; got shape {tuple(X.shape)}")
    if X.shape[0] == 0:
        _fail(_OP, ValueError, f"X has no rows (shape {tuple(X.shape)})")
    # checked, standardized in float64 and cast to the model's dtype, as predict does: values
    # that would overflow that dtype raise
    X = net.input_array(X)
    scale = None
    if net.standardizer is not None:
        scale = np.asarray(net.standardizer.scale, dtype=np.float64)
    return X, scale


class _Saved:
    __slots__ = ("net", "taylor", "factors", "k1", "k2", "pick", "pick2")


def derivatives(net, X, first=(), second=(), names=None):
    """(u, du..., d2u...) as Tensors; see the module's docstring for the spec."""
    be, d = net.backend, net.layers[0]
    want1, want2 = resolve(first, second, names, d)
    # the streams the kernel needs: the first derivatives asked for, then any input a second
    # derivative needs (their streams are computed but not returned)
    streams = list(dict.fromkeys(want1 + tuple(i for p in want2 for i in p)))
    X, scale = _inputs(net, X)
    params = parameters(net)
    Ws, bs = [p.value for p in params[0::2]], [p.value for p in params[1::2]]
    F, dF, d2F, saved = kernels_of(be).taylor_forward(X, Ws, bs, net.layer_activations,
                                                      tuple(streams), want2)
    pick = [streams.index(i) for i in want1]
    factors = [1.0] * (1 + len(want1) + len(want2))
    if scale is not None:
        factors = ([1.0] + [1.0 / scale[i] for i in want1]
                   + [1.0 / (scale[i] * scale[j]) for i, j in want2])
    parts = [F] + [dF[a] for a in pick] + [d2F[q] for q in range(len(want2))]
    packed = be.empty((len(parts),) + tuple(F.shape), F.dtype)
    for s, (part, f) in enumerate(zip(parts, factors)):
        packed[s] = part if f == 1.0 else part * f
    keep = _Saved()
    keep.net, keep.taylor, keep.factors = net, saved, factors
    keep.k1, keep.k2, keep.pick = len(streams), len(want2), pick
    node = result(packed, be, tuple(params), _derivatives_backward, keep)
    return tuple(result(packed[s], be, (node,), _part_backward, s) for s in range(len(parts)))


class _Parts:
    """The gradients arriving at some of the node's outputs: {output index: array}. Adding two
    merges them (an output's gradients are added, as the tape adds any gradient)."""

    __slots__ = ("by_output",)

    def __init__(self, by_output):
        self.by_output = by_output

    def __add__(self, other):
        merged = dict(self.by_output)
        for s, g in other.by_output.items():
            merged[s] = g if s not in merged else merged[s] + g
        return _Parts(merged)


@backward_of(_OP, graph=False)
def _part_backward(out, g, graph):
    """Output s of the node: its gradient, handed on as it is."""
    return (_Parts({out._saved: g}),)


@backward_of(_OP, graph=False)
def _derivatives_backward(out, parts, graph):
    keep = out._saved
    net, be = keep.net, keep.net.backend
    f = keep.factors
    n_first = len(keep.pick)
    shape, dtype = tuple(out.value.shape[1:]), out.value.dtype

    def stream(s, into):
        """into = dLoss/d(output s) times its factor (zero when no gradient arrived)."""
        g = parts.by_output.get(s)
        if g is None:
            into.fill(0)
        elif f[s] != 1.0:
            into[...] = g * f[s]
        else:
            into[...] = g

    G = be.empty(shape, dtype)
    stream(0, G)
    dG = be.zeros((keep.k1,) + shape, dtype)
    for a, s in enumerate(keep.pick):
        # an input asked for twice (first=(0, 0)) is one stream: its outputs' gradients add up
        g = parts.by_output.get(1 + a)
        if g is not None:
            dG[s] += g * f[1 + a] if f[1 + a] != 1.0 else g
    d2G = be.empty((keep.k2,) + shape, dtype)
    for q in range(keep.k2):
        stream(1 + n_first + q, d2G[q])
    Ws = [p.value for p in out._parents[0::2]]
    dWs, dbs = kernels_of(be).taylor_backward(keep.taylor, Ws, net.layer_activations, G, dG, d2G)
    return tuple(x for pair in zip(dWs, dbs) for x in pair)
