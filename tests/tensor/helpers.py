"""Finite-difference checks of Tensor operations: first derivatives (gradcheck) and second
derivatives through create_graph=True (gradgradcheck), in float64 on any backend."""

import numpy as np

import backprop as bp

EPS = 1e-6


def tensors(values, backend, dtype="float64"):
    return [bp.Tensor(v, requires_grad=True, backend=backend, dtype=dtype) for v in values]


def scalar(fn, ts, weight):
    """L = Σ weight ⊙ fn(ts): a scalar that depends on every entry of the output."""
    Y = fn(*ts)
    return Y if weight is None else (Y * bp.Tensor(weight, backend=Y.backend.name, dtype=Y.dtype)).sum()


def output_weight(fn, values, backend, rng):
    Y = fn(*tensors(values, backend))
    return None if Y.size == 1 and Y.ndim == 0 else rng.normal(size=Y.shape)


def numeric(f, values, i):
    """Central differences of the float f(values) with respect to values[i], entry by entry."""
    x = values[i]
    out = np.zeros_like(x)
    for k in np.ndindex(*x.shape):
        old = x[k]
        x[k] = old + EPS
        fp = f(values)
        x[k] = old - EPS
        fm = f(values)
        x[k] = old
        out[k] = (fp - fm) / (2 * EPS)
    return out


def gradcheck(fn, values, backend, rng, rtol=1e-5, atol=1e-7):
    """bp.grad of Σ weight ⊙ fn against central differences, for every input."""
    values = [np.array(v, dtype=np.float64) for v in values]
    weight = output_weight(fn, values, backend, rng)

    def f(vals):
        return float(scalar(fn, tensors(vals, backend), weight).item())
    ts = tensors(values, backend)
    grads = bp.grad(scalar(fn, ts, weight), ts)
    for i, g in enumerate(grads):
        assert g.shape == ts[i].shape
        np.testing.assert_allclose(g.numpy(), numeric(f, values, i), rtol=rtol, atol=atol,
                                   err_msg=f"input {i}")
    return grads


def gradgradcheck(fn, values, backend, rng, rtol=1e-5, atol=1e-6):
    """The gradient of Σ_i V_i ⊙ dL/dx_i (made with create_graph=True) against central
    differences of that first derivative (made without create_graph)."""
    values = [np.array(v, dtype=np.float64) for v in values]
    weight = output_weight(fn, values, backend, rng)
    V = [rng.normal(size=v.shape) for v in values]

    def first(ts, create_graph):
        gs = bp.grad(scalar(fn, ts, weight), ts, create_graph=create_graph)
        total = None
        for g, v in zip(gs, V):
            term = (g * bp.Tensor(v, backend=backend)).sum()
            total = term if total is None else total + term
        return total

    def f(vals):
        return float(first(tensors(vals, backend), False).item())
    ts = tensors(values, backend)
    S = first(ts, True)
    grads = bp.grad(S, ts, allow_unused=True) if S.requires_grad else [None] * len(ts)
    for i, g in enumerate(grads):
        expected = numeric(f, values, i)
        got = np.zeros_like(expected) if g is None else g.numpy()
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=f"input {i}")
