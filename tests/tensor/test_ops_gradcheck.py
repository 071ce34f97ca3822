"""Every Tensor operation against float64 central differences: first derivatives, and second
derivatives through create_graph=True, on every backend."""

import numpy as np
import pytest

import backprop as bp

from .helpers import gradcheck, gradgradcheck


def _pos(rng, shape):
    return rng.uniform(0.5, 2.0, size=shape)


def _away(rng, shape):
    """Entries at least 0.3 away from 0 (for abs, relu, leaky_relu: no kink in reach of eps)."""
    return rng.uniform(0.3, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)


def _probs(rng, shape):
    P = rng.uniform(0.1, 1.0, size=shape)
    return P / P.sum(axis=1, keepdims=True)


# name -> (function of Tensors, makers of the inputs from rng)
CASES = {
    "add": (lambda a, b: a + b, [(3, 4), (3, 4)]),
    "add_broadcast_row": (lambda a, b: a + b, [(3, 4), (4,)]),
    "add_broadcast_both": (lambda a, b: a + b, [(3, 1), (1, 4)]),
    "add_scalar": (lambda a: 2.0 + a, [(2, 3)]),
    "sub_broadcast": (lambda a, b: a - b, [(2, 3, 4), (3, 1)]),
    "rsub": (lambda a: 1.0 - a, [(3,)]),
    "mul_broadcast": (lambda a, b: a * b, [(3, 4), (1, 4)]),
    "div_broadcast": (lambda a, b: a / b, [(3, 4), ("pos", (4,))]),
    "rdiv": (lambda a: 1.0 / a, [("pos", (3,))]),
    "neg": (lambda a: -a, [(2, 3)]),
    "pow_int": (lambda a: a ** 3, [(2, 3)]),
    "pow_two": (lambda a: a ** 2, [(2, 3)]),
    "pow_real": (lambda a: a ** 2.5, [("pos", (2, 3))]),
    "pow_tensor": (lambda a, b: a ** b, [("pos", (2, 3)), (3,)]),
    "exp": (lambda a: a.exp(), [(2, 3)]),
    "log": (lambda a: bp.log(a), [("pos", (2, 3))]),
    "sin": (lambda a: bp.sin(a), [(2, 3)]),
    "cos": (lambda a: a.cos(), [(2, 3)]),
    "sqrt": (lambda a: a.sqrt(), [("pos", (2, 3))]),
    "abs": (lambda a: bp.abs(a), [("away", (2, 3))]),
    "tanh": (lambda a: a.tanh(), [(3, 4)]),
    "sigmoid": (lambda a: bp.sigmoid(a), [(3, 4)]),
    "relu": (lambda a: bp.relu(a) * a, [("away", (3, 4))]),
    "leaky_relu": (lambda a: a.leaky_relu() * a, [("away", (3, 4))]),
    "sum_all": (lambda a: (a * a).sum(), [(3, 4)]),
    "sum_axis": (lambda a: bp.sum(a * a, 1), [(3, 4)]),
    "sum_axes_keepdims": (lambda a: (a * a).sum(axis=(0, 2), keepdims=True), [(2, 3, 4)]),
    "mean_axis": (lambda a: (a * a).mean(0), [(3, 4)]),
    "mean_all": (lambda a: bp.mean(a.tanh()), [(3, 4)]),
    "reshape": (lambda a: (a.reshape(4, 3) * a.reshape(4, 3)), [(3, 4)]),
    "transpose": (lambda a: a.T * a.transpose(), [(3, 4)]),
    "transpose_axes": (lambda a: a.transpose(2, 0, 1).tanh(), [(2, 3, 4)]),
    "slice": (lambda a: a[1:, ::2] * a[:-1, 1::2], [(3, 4)]),
    "int_index_repeats": (lambda a: a[[0, 2, 0, 1]] * a[[1, 1, 2, 0]], [(3, 4)]),
    "int_and_slice": (lambda a: a[1, 1:] * a[..., 0, None][2] + a[np.newaxis, 0, 1:].sin(), [(3, 4)]),
    "array_and_slice_repeats": (lambda a: a[np.array([0, 0, 2]), 1:] ** 2, [(3, 4)]),
    "int_index_2d": (lambda a: a[np.array([0, 2, 2]), np.array([1, 1, 3])] ** 2, [(3, 4)]),
    "concatenate": (lambda a, b: bp.concatenate([a, b, a], axis=1).tanh(), [(2, 3), (2, 2)]),
    "stack": (lambda a, b: bp.stack([a, b * a], axis=1).sin(), [(2, 3), (2, 3)]),
    "matmul": (lambda a, b: (a @ b).tanh(), [(3, 4), (4, 2)]),
    "matmul_same": (lambda a: a @ a.T, [(3, 4)]),
    "matmul_vec": (lambda a, b: (a @ b).tanh(), [(4,), (4, 2)]),
    "matmul_batched": (lambda a, b: (a @ b).tanh(), [(2, 3, 4), (2, 4, 2)]),
    "einsum_seed": (lambda a, b: bp.einsum("hik,hjk->hij", a, b).tanh(), [(2, 3, 4), (2, 5, 4)]),
    "einsum_4index": (lambda a, b: bp.einsum("abcd,cde->abe", a, b).sin(), [(2, 2, 3, 2), (3, 2, 2)]),
    "einsum_dropped": (lambda a: bp.einsum("ijk->j", a * a), [(2, 3, 4)]),
    "einsum_three": (lambda a, b, c: bp.einsum("ij,jk,kl->il", a, b, c), [(2, 3), (3, 4), (4, 2)]),
    "einsum_repeat": (lambda a: bp.einsum("ij,ij->i", a, a.tanh()), [(3, 4)]),
    "softmax": (lambda a: bp.softmax(a) * a, [(3, 4)]),
    "log_softmax": (lambda a: a.log_softmax(axis=0) * a, [(3, 4)]),
    "sse": (lambda f, y: bp.sse(f.tanh(), y), [(4, 3), (4, 3)]),
    "mse": (lambda f, y: bp.mse(f * f, y), [(4, 3), (4, 3)]),
    "cross_entropy": (lambda f: bp.cross_entropy(f * f, _CONST["probs"]), [(4, 3)]),
    "cross_entropy_labels": (lambda f: bp.cross_entropy(f.tanh(), np.array([0, 2, 1, 2])), [(4, 3)]),
    "bce": (lambda f: bp.bce(f * f, _CONST["binary"]), [(4, 3)]),
    "loss_target_grad": (lambda f, y: bp.mse(f, y.tanh()) + bp.bce(f, y.sigmoid()), [(4, 3), (4, 3)]),
    "repeated_use": (lambda x: x * x + x.sin() * x - x / (x * x + 1.0), [(3,)]),
    "dense_tanh": (lambda a, w, b: bp.tensor.dense(a, w, b, "tanh"), [(4, 3), (3, 2), (2,)]),
    "dense_sigmoid": (lambda a, w, b: bp.tensor.dense(a, w, b, "sigmoid") * a.sum(axis=1, keepdims=True), [(4, 3), (3, 2), (2,)]),
    "dense_identity": (lambda a, w, b: bp.tensor.dense(a, w, b) ** 2, [(4, 3), (3, 2), (2,)]),
}

_R = np.random.default_rng(7)
_CONST = {"probs": _probs(_R, (4, 3)), "binary": (_R.random((4, 3)) > 0.5).astype(float)}


def _values(shapes, rng):
    out = []
    for s in shapes:
        kind, shape = s if isinstance(s[0], str) else ("normal", s)
        out.append({"normal": lambda r, sh: r.normal(size=sh), "pos": _pos, "away": _away}[kind](rng, shape))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_first_derivatives(case, backend, rng):
    fn, shapes = CASES[case]
    gradcheck(fn, _values(shapes, rng), backend, rng)


@pytest.mark.parametrize("case", list(CASES))
def test_second_derivatives_through_create_graph(case, backend, rng):
    fn, shapes = CASES[case]
    gradgradcheck(fn, _values(shapes, rng), backend, rng)


@pytest.mark.parametrize("case", ["add_broadcast_row", "tanh", "matmul", "einsum_seed", "sse",
                                  "cross_entropy", "int_index_repeats", "dense_tanh", "softmax"])
def test_float32_follows_float64(case, backend, dtype, rng):
    """The same operation in ``dtype`` keeps the dtype and gives float64's gradients (to its tolerance)."""
    fn, shapes = CASES[case]
    values = _values(shapes, rng)
    results = {}
    for dt in ("float64", dtype):
        ts = [bp.Tensor(v, requires_grad=True, backend=backend, dtype=dt) for v in values]
        Y = fn(*ts)
        assert Y.dtype == np.dtype(dt)
        L = Y.sum() if Y.size > 1 else Y
        L.backward()
        for t in ts:
            assert t.grad.dtype == np.dtype(dt)
        results[dt] = [np.array(t.backend.to_numpy(t.grad)) for t in ts]
    for g32, g64 in zip(results[dtype], results["float64"]):
        scale = max(1.0, float(np.max(np.abs(g64))))
        assert np.max(np.abs(g32 - g64)) <= (1e-4 if dtype == "float32" else 1e-12) * scale
