"""Tensors with value and grad: einsum backprop against finite differences and against the MLP."""

import numpy as np
import pytest

import backprop as bp
from backprop.gradcheck import numeric_gradient
from backprop.tensor import activation, add, sse


@pytest.mark.parametrize("spec,shapes", [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("hik,hjk->hij", [(2, 3, 4), (2, 5, 4)]),
    ("ij->j", [(3, 4)]),
    ("ij,j->i", [(3, 4), (4,)]),
    ("i,j->ij", [(3,), (2,)]),
    ("ijk,k->", [(2, 3, 4), (4,)]),
])
def test_einsum_backward_matches_finite_differences(spec, shapes, rng):
    values = [rng.normal(size=s) for s in shapes]
    weight = rng.normal(size=np.einsum(spec, *values).shape)

    def build():
        """L = Σ weight ⊙ einsum(spec, inputs): a scalar that depends on every output entry."""
        tensors = [bp.Tensor(v) for v in values]
        Y = bp.einsum(spec, *tensors)
        idx = "".join(chr(ord("p") + i) for i in range(Y.value.ndim))
        return tensors, bp.einsum(f"{idx},{idx}->", Y, bp.Tensor(weight))
    tensors, L = build()
    L.backward()
    for t, v in zip(tensors, values):
        numeric = numeric_gradient(lambda: float(build()[1].value), v, 1e-6)
        np.testing.assert_allclose(t.grad, numeric, rtol=1e-6, atol=1e-8)


def test_tensor_mlp_gives_the_mlp_gradients(rng):
    net = bp.MLP([3, 5, 2], activation="tanh", dtype="float64", seed=0)
    X, Y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    loss, grads = net.loss_and_grad(X, Y, "sse")
    W = [bp.Tensor(w) for w in net.weights]
    b = [bp.Tensor(c) for c in net.biases]
    Xt = bp.Tensor(X)
    A1 = activation(add(bp.einsum("ni,ij->nj", Xt, W[0]), b[0]), "tanh")
    F = add(bp.einsum("ni,ij->nj", A1, W[1]), b[1])
    L = sse(F, Y)
    L.backward()
    assert float(L.value) == pytest.approx(loss)
    for l in range(2):
        np.testing.assert_allclose(W[l].grad, grads.weights[l], rtol=1e-12)
        np.testing.assert_allclose(b[l].grad, grads.biases[l], rtol=1e-12)
    np.testing.assert_allclose(Xt.grad, grads.X, rtol=1e-12)


def test_einsum_rejects_what_it_cannot_do():
    A = bp.Tensor(np.ones((2, 2)))
    with pytest.raises(ValueError, match="explicit output"):
        bp.einsum("ij", A)
    with pytest.raises(ValueError, match="diagonal"):
        bp.einsum("ii->i", A)
    with pytest.raises(ValueError, match="names 2 inputs"):
        bp.einsum("ij,jk->ik", A)
    with pytest.raises(ValueError, match="starts from a scalar"):
        A.backward()
