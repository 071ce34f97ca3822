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


def test_backward_twice_accumulates_leaves_once_per_call(rng):
    """PyTorch's semantics (with a retained graph): each backward adds the gradients to the
    leaves once; intermediate tensors hold the gradients of the latest call."""
    X0, W0, b0, Y0 = rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=2), rng.normal(size=(4, 2))
    W, b, X = bp.Tensor(W0), bp.Tensor(b0), bp.Tensor(X0)
    H = add(bp.einsum("ni,ij->nj", X, W), b)
    A = activation(H, "tanh")
    L = sse(add(A, A), Y0)  # A used twice: a diamond in the graph
    L.backward()
    once = {"W": W.grad.copy(), "b": b.grad.copy(), "X": X.grad.copy(), "A": A.grad.copy(),
            "H": H.grad.copy()}
    L.backward()
    np.testing.assert_allclose(W.grad, 2 * once["W"], rtol=1e-12)
    np.testing.assert_allclose(b.grad, 2 * once["b"], rtol=1e-12)
    np.testing.assert_allclose(X.grad, 2 * once["X"], rtol=1e-12)
    np.testing.assert_array_equal(A.grad, once["A"])  # intermediates: this call's values
    np.testing.assert_array_equal(H.grad, once["H"])
    np.testing.assert_array_equal(L.grad, 1.0)
    # the gradient itself is right: against finite differences of the same objective
    def objective():
        A_ = np.tanh(X0 @ W0 + b0)
        return 0.5 * np.sum((2 * A_ - Y0) ** 2)
    np.testing.assert_allclose(once["W"], numeric_gradient(objective, W0, 1e-6), rtol=1e-6)


def test_backward_from_a_deep_chain():
    x = bp.Tensor(np.ones(3))
    y = x
    for _ in range(3000):  # deeper than Python's recursion limit
        y = add(y, bp.Tensor(np.zeros(3)))
    bp.einsum("i->", y).backward()
    np.testing.assert_array_equal(x.grad, np.ones(3))
