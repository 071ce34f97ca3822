"""Products: ``@`` (2-D products go to the backend's gemm kernel) and ``einsum`` (McAllester's loops).

A contraction written as loops of scalar assignments,

    for h, i, j, k:   Y[h, i, j] += A[h, i, k] B[h, j, k]          einsum("hik,hjk->hij", A, B)

has backprop loops of the same shape, one per input:

    for h, i, j, k:   A.grad[h, i, k] += Y.grad[h, i, j] B[h, j, k]   einsum("hij,hjk->hik", Y.grad, B)
    for h, i, j, k:   B.grad[h, j, k] += Y.grad[h, i, j] A[h, i, k]   einsum("hij,hik->hjk", Y.grad, A)

An index that an input has but neither the output nor the other inputs have (a sum over one
array alone, as in "ij->j") cannot appear in the backward einsum; its gradient is the same for
every value of that index, so it is broadcast. Under create_graph the backward einsums are
Tensor einsums, so they are recorded too.
"""

from __future__ import annotations

import numpy as np

from .core import Tensor, _fail, as_tensor, backward_of, kernels, pair, result
from .ops_reduce import broadcast_to


def matmul(A, B):
    """Y = A @ B.  2-D:  for i, j, k: Y[i, j] += A[i, k] B[k, j]  (the backend's gemm);
    backprop: A.grad[i, k] += Y.grad[i, j] B[k, j] (G Bᵀ);  B.grad[k, j] += A[i, k] Y.grad[i, j] (Aᵀ G).
    1-D operands and equal leading (batch) axes go through einsum."""
    A, B = pair(A, B, "matmul")
    a, b = A.value, B.value
    if a.ndim == 2 and b.ndim == 2:
        if a.shape[1] != b.shape[0]:
            _fail("matmul", ValueError, f"shapes {A.shape} and {B.shape} do not chain "
                                        f"({a.shape[1]} != {b.shape[0]})")
        return result(kernels(A).gemm(a, b), A.backend, (A, B), _matmul_backward)
    if a.ndim == 0 or b.ndim == 0:
        _fail("matmul", ValueError, "a 0-d operand; use * for a product with a scalar")
    letters = "abcdefghuvw"
    if a.ndim == 1 and b.ndim == 1:
        return einsum("k,k->", A, B)
    if a.ndim == 1:
        lead = letters[:b.ndim - 2]
        return einsum(f"k,{lead}kj->{lead}j", A, B)
    if b.ndim == 1:
        lead = letters[:a.ndim - 2]
        return einsum(f"{lead}ik,k->{lead}i", A, B)
    if a.shape[:-2] != b.shape[:-2]:
        _fail("matmul", ValueError, f"batched operands need equal leading axes; got {A.shape} and {B.shape}")
    lead = letters[:a.ndim - 2]
    return einsum(f"{lead}ik,{lead}kj->{lead}ij", A, B)


@backward_of("matmul")
def _matmul_backward(out, g, graph):
    A, B = out._parents
    if graph:
        return (matmul(g, B.transpose()) if A.requires_grad else None,
                matmul(A.transpose(), g) if B.requires_grad else None)
    k = kernels(out)
    return (k.gemm(g, B.value, trans_b=True) if A.requires_grad else None,
            k.gemm(A.value, g, trans_a=True) if B.requires_grad else None)


def _parse(spec, n_inputs):
    if not isinstance(spec, str) or "->" not in spec:
        raise ValueError(f"einsum spec {spec!r} needs an explicit output: 'ij,jk->ik'")
    inputs, output = spec.replace(" ", "").split("->")
    inputs = inputs.split(",")
    if len(inputs) != n_inputs:
        raise ValueError(f"einsum spec {spec!r} names {len(inputs)} inputs; {n_inputs} given")
    for term in inputs + [output]:
        if not all(c.isalpha() for c in term):
            raise ValueError(f"einsum spec {spec!r}: indices are letters ('...' is not supported)")
        if len(set(term)) != len(term):
            raise ValueError(f"einsum spec {spec!r}: an index repeated within one array "
                             "(a diagonal) is not supported")
    if not set(output) <= set("".join(inputs)):
        raise ValueError(f"einsum spec {spec!r}: output index not found in any input")
    return inputs, output


def einsum(spec, *tensors):
    """Y = einsum(spec, *tensors) for any explicit spec ("hik,hjk->hij"); every input's gradient
    is the einsum of Y.grad with the other inputs (see the module's docstring)."""
    inputs, output = _parse(spec, len(tensors))
    if not tensors:
        raise ValueError("einsum needs at least one tensor")
    first = next((t for t in tensors if isinstance(t, Tensor)), None)
    if first is None:
        raise TypeError("einsum: expected at least one Tensor operand")
    tensors = tuple(as_tensor(t, first, "einsum") for t in tensors)
    sizes = {}
    for term, t in zip(inputs, tensors):
        if len(term) != t.value.ndim:
            raise ValueError(f"einsum spec {spec!r}: {term!r} for an array of shape {t.shape}")
        for c, n in zip(term, t.value.shape):
            if sizes.setdefault(c, n) != n:
                raise ValueError(f"einsum spec {spec!r}: index {c!r} has size {sizes[c]} in one "
                                 f"operand and {n} in another (shapes {[t.shape for t in tensors]})")
    spec = ",".join(inputs) + "->" + output
    value = np.einsum(spec, *(t.value for t in tensors), optimize=len(tensors) > 2)
    if isinstance(value, np.generic):
        value = np.asarray(value)
    return result(value, first.backend, tensors, _einsum_backward, (inputs, output))


@backward_of("einsum")
def _einsum_backward(out, g, graph):
    inputs, output = out._saved
    tensors = out._parents
    grads = []
    for i, (term, t) in enumerate(zip(inputs, tensors)):
        if not t.requires_grad:
            grads.append(None)
            continue
        others = [(inputs[j], tensors[j]) for j in range(len(tensors)) if j != i]
        available = set(output).union(*(set(o) for o, _ in others))
        kept = "".join(c for c in term if c in available)  # indices the backward loop can reach
        sub = ",".join([output] + [o for o, _ in others]) + "->" + kept
        shape = tuple(t.value.shape[k] if c in available else 1 for k, c in enumerate(term))
        if graph:
            gi = einsum(sub, g, *(o for _, o in others))
            if kept != term:
                gi = broadcast_to(gi.reshape(shape), t.value.shape)
        else:
            gi = np.einsum(sub, g, *(o.value for _, o in others), optimize=len(others) > 1)
            if isinstance(gi, np.generic):
                gi = np.asarray(gi)
            if kept != term:
                gi = np.broadcast_to(gi.reshape(shape), t.value.shape)
        grads.append(gi)
    return tuple(grads)


def _install():
    Tensor.__matmul__ = lambda a, b: matmul(a, b)
    Tensor.__rmatmul__ = lambda a, b: matmul(b, a)
    Tensor.matmul = matmul


_install()
