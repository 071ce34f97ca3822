"""Tensors with .value and .grad, and backprop through einsum (McAllester's arrays and tensors).

Every array is an object with ``value`` and ``grad`` of the same shape. A tensor operation
written as loops of scalar assignments,

    for h, i, j, k:   Y[h, i, j] += A[h, i, k] B[h, j, k]          einsum("hik,hjk->hij", A, B)

has backprop loops of the same shape, one per input:

    for h, i, j, k:   A.grad[h, i, k] += Y.grad[h, i, j] B[h, j, k]   einsum("hij,hjk->hik", Y.grad, B)
    for h, i, j, k:   B.grad[h, j, k] += Y.grad[h, i, j] A[h, i, k]   einsum("hij,hik->hjk", Y.grad, A)

An index that an input has but neither the output nor the other inputs have (a sum over one
array alone, as in "ij->j") cannot appear in the backward einsum; its gradient is the same for
every value of that index, so it is broadcast. This module is the numpy teaching view of
backprop; the MLP's backends do not use it.
"""

from __future__ import annotations

import numpy as np

from .backends.numpy_backend import NumpyBackend

_ACT = NumpyBackend()


class Tensor:
    """An array ``value`` and the gradient ``grad`` of a scalar with respect to it."""

    def __init__(self, value, _parents=(), _backward=None):
        self.value = np.asarray(value, dtype=np.float64)
        self.grad = np.zeros_like(self.value)
        self._parents = _parents
        self._backward = _backward

    @property
    def shape(self):
        return self.value.shape

    @property
    def is_leaf(self):
        """A tensor made by the user (no recorded operation produced it)."""
        return not self._parents

    def backward(self):
        """Backpropagates from this scalar: dself/dself = 1, then every recorded op in reverse.

        PyTorch's semantics: the gradients of leaves accumulate (``+=``), once per call, so a
        second ``backward()`` through the same graph adds the same gradients again (2x); the
        gradients of intermediate tensors hold this call's values (they restart from zero).
        """
        if self.value.size != 1:
            raise ValueError(f"backward() starts from a scalar; this tensor has shape {self.shape}")
        order, seen = [], set()
        stack = [(self, False)]
        while stack:  # depth-first, parents before children (no recursion limit on deep graphs)
            t, parents_done = stack.pop()
            if parents_done:
                order.append(t)
                continue
            if id(t) in seen:
                continue
            seen.add(id(t))
            stack.append((t, True))
            stack.extend((p, False) for p in reversed(t._parents) if id(p) not in seen)
        for t in order:
            if not t.is_leaf:
                t.grad = np.zeros_like(t.value)
        self.grad = self.grad + np.ones_like(self.value)
        for t in reversed(order):
            if t._backward is not None:
                t._backward()

    def __add__(self, other):
        return add(self, other)

    def __repr__(self):
        return f"Tensor(shape={self.shape})"


def _parse(spec, n_inputs):
    if "->" not in spec:
        raise ValueError(f"einsum spec {spec!r} needs an explicit output: 'ij,jk->ik'")
    inputs, output = spec.replace(" ", "").split("->")
    inputs = inputs.split(",")
    if len(inputs) != n_inputs:
        raise ValueError(f"einsum spec {spec!r} names {len(inputs)} inputs; {n_inputs} given")
    for term in inputs + [output]:
        if len(set(term)) != len(term):
            raise ValueError(f"einsum spec {spec!r}: an index repeated within one array "
                             "(a diagonal) is not supported")
    if not set(output) <= set("".join(inputs)):
        raise ValueError(f"einsum spec {spec!r}: output index not found in any input")
    return inputs, output


def einsum(spec, *tensors):
    """Y = einsum(spec, *tensors) as a Tensor whose backward adds into every input's grad."""
    inputs, output = _parse(spec, len(tensors))
    for term, t in zip(inputs, tensors):
        if len(term) != t.value.ndim:
            raise ValueError(f"einsum spec {spec!r}: {term!r} for an array of shape {t.shape}")
    Y = Tensor(np.einsum(spec, *(t.value for t in tensors)), _parents=tensors)

    def backward():
        for i, (term, t) in enumerate(zip(inputs, tensors)):
            others = [(inputs[j], tensors[j].value) for j in range(len(tensors)) if j != i]
            available = set(output).union(*(set(o) for o, _ in others))
            kept = "".join(c for c in term if c in available)  # indices the backward loop can reach
            sub = ",".join([output] + [o for o, _ in others]) + "->" + kept
            g = np.einsum(sub, Y.grad, *(v for _, v in others))
            shape = [t.shape[k] if c in available else 1 for k, c in enumerate(term)]
            t.grad += np.broadcast_to(g.reshape(shape), t.shape)
    Y._backward = backward
    return Y


def add(A, B):
    """Y = A + B (B may broadcast over A's leading axes, as a bias row over samples)."""
    Y = Tensor(A.value + B.value, _parents=(A, B))

    def backward():
        A.grad += Y.grad
        axes = tuple(range(Y.grad.ndim - B.value.ndim))
        B.grad += Y.grad.sum(axis=axes)
    Y._backward = backward
    return Y


def activation(X, name):
    """Y = act(X) elementwise; backward X.grad += Y.grad ⊙ act'(Y) (the derivative from the output)."""
    Y = Tensor(_ACT.activation_forward(X.value, name), _parents=(X,))

    def backward():
        X.grad += _ACT.activation_backward(Y.grad, Y.value, name)
    Y._backward = backward
    return Y


def sse(F, Y):
    """L = ½ Σ (F - Y)², a scalar Tensor; backward F.grad += L.grad (F - Y)."""
    R = F.value - np.asarray(Y, dtype=np.float64)
    L = Tensor(0.5 * np.sum(R * R), _parents=(F,))

    def backward():
        F.grad += L.grad * R
    L._backward = backward
    return L
