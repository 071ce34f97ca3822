"""The MLP as a function of Tensors: one dense node per layer, the MLP's own losses and
gradients, parameters that share memory with the model, and derivatives with respect to the input."""

import numpy as np
import pytest

import backprop as bp

from ..conftest import assert_close
from .helpers import numeric

LOSSES = ["sse", "mse", "cross_entropy", "bce"]


def _grad(t):
    return np.array(t.backend.to_numpy(t.grad))


def _data(rng, n, p, k, loss):
    X = rng.normal(size=(n, p))
    if loss == "cross_entropy":
        Y = np.eye(k)[rng.integers(0, k, size=n)]
    elif loss == "bce":
        Y = (rng.random((n, k)) > 0.5).astype(float)
    else:
        Y = rng.normal(size=(n, k))
    return X, Y


@pytest.mark.parametrize("loss", LOSSES)
def test_tensor_mlp_gives_loss_and_grad(backend, dtype, loss, rng):
    net = bp.MLP([3, 5, 4, 2], activation=["tanh", "relu"], output_activation="sigmoid" if loss == "sse" else "identity",
                 backend=backend, dtype=dtype, seed=1)
    X, Y = _data(rng, 6, 3, 2, loss)
    value, grads = net.loss_and_grad(X, Y, loss)
    Xt = bp.Tensor(X, requires_grad=True, backend=backend, dtype=dtype)
    L = bp.tensor.loss(loss, net(Xt), Y)
    L.backward()
    assert L.dtype == np.dtype(dtype)
    assert float(L.item()) == pytest.approx(value, rel=1e-5 if dtype == "float32" else 1e-12)
    params = net.parameters()
    for l in range(net.n_layers):
        assert_close(_grad(params[2 * l]),
                     grads.weights[l], dtype, what=f"dW{l}")
        assert_close(_grad(params[2 * l + 1]),
                     grads.biases[l], dtype, what=f"db{l}")
    assert_close(_grad(Xt), grads.X, dtype, what="dX")


def test_one_node_per_dense_layer(backend):
    net = bp.MLP([2, 4, 4, 1], backend=backend, dtype="float64", seed=0)
    F = net(np.ones((3, 2)))
    names, t = [], F
    while t._op is not None:
        names.append(t.op_name)
        t = t._parents[0]
    assert names == ["dense[identity]", "dense[tanh]", "dense[tanh]"]


def test_parameters_share_memory_with_the_model(backend):
    net = bp.MLP([2, 3, 1], backend=backend, dtype="float64", seed=0)
    params = net.parameters()
    assert [p.value is a for p, a in zip(params, net.params)] == [True] * 4
    assert all(p.requires_grad and p.is_leaf for p in params)
    assert net.parameters()[0] is params[0]  # the same Tensors: gradients accumulate in one place
    net.set_params([np.zeros((2, 3)), np.ones((3, 1))], [np.zeros(3), np.full(1, 2.0)])
    assert params[2].numpy().tolist() == [[1.0], [1.0], [1.0]]
    F = net(np.ones((2, 2)))
    assert F.numpy().tolist() == [[2.0], [2.0]]


def test_two_calls_accumulate_into_one_parameter(backend, rng):
    net = bp.MLP([2, 3, 1], backend=backend, dtype="float64", seed=0)
    X1, X2 = rng.normal(size=(4, 2)), rng.normal(size=(5, 2))
    L = net(X1).sum() + (net(X2) * net(X2)).sum()
    L.backward()
    _, g1 = net.loss_and_grad(X1, net.predict(X1) - 1.0, "sse")  # dL/dF = 1 for F.sum()
    _, g2 = net.loss_and_grad(X2, -net.predict(X2), "sse")       # dL/dF = 2F for Σ F²
    expected = g1.weights[0] + g2.weights[0]
    np.testing.assert_allclose(_grad(net.parameters()[0]),
                               expected, rtol=1e-10, atol=1e-12)


def _input_second_derivative(net, X, V, backend):
    """S = Σ V ⊙ d(Σ F)/dX with create_graph, and its gradient with respect to X and W_0."""
    Xt = bp.Tensor(X, requires_grad=True, backend=backend)
    dX = bp.grad(net(Xt).sum(), Xt, create_graph=True)
    S = (dX * bp.Tensor(V, backend=backend)).sum()
    return S, bp.grad(S, [Xt, net.parameters()[0]])


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_input_gradient_differentiated_again(backend, act, rng):
    net = bp.MLP([2, 5, 4, 1], activation=act, backend=backend, dtype="float64", seed=3)
    X, V = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    S, (gX, gW) = _input_second_derivative(net, X, V, backend)

    def first(vals):
        Xt = bp.Tensor(vals[0], requires_grad=True, backend=backend)
        return float((bp.grad(net(Xt).sum(), Xt).numpy() * V).sum())
    np.testing.assert_allclose(gX.numpy(), numeric(first, [X.copy()], 0), rtol=1e-6, atol=1e-8)
    W0 = net.weights[0]

    def first_w(vals):
        net.set_params([vals[0]] + net.weights[1:], net.biases)
        return first([X])
    numeric_w = numeric(first_w, [W0.copy()], 0)
    net.set_params([W0] + net.weights[1:], net.biases)
    np.testing.assert_allclose(gW.numpy(), numeric_w, rtol=1e-6, atol=1e-8)


def test_second_derivative_matches_pytorch(backend, rng):
    torch = pytest.importorskip("torch")
    net = bp.MLP([2, 6, 6, 1], activation="tanh", backend=backend, dtype="float64", seed=5)
    X, V = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    S, (gX, gW) = _input_second_derivative(net, X, V, backend)

    Ws = [torch.tensor(w, requires_grad=True) for w in net.weights]
    bs = [torch.tensor(b, requires_grad=True) for b in net.biases]
    Xt = torch.tensor(X, requires_grad=True)
    A = Xt
    for l in range(net.n_layers):
        A = A @ Ws[l] + bs[l]
        if l < net.n_layers - 1:
            A = torch.tanh(A)
    (dX,) = torch.autograd.grad(A.sum(), Xt, create_graph=True)
    S_t = (dX * torch.tensor(V)).sum()
    gX_t, gW_t = torch.autograd.grad(S_t, [Xt, Ws[0]])
    assert float(S.item()) == pytest.approx(float(S_t.detach()), rel=1e-12)
    np.testing.assert_allclose(gX.numpy(), gX_t.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gW.numpy(), gW_t.numpy(), rtol=1e-10, atol=1e-12)


def test_laplacian_of_a_network_output(backend, rng):
    """d²u/dx² for u = net(x), x scalar per row (a physics-informed residual's ingredient)."""
    net = bp.MLP([1, 8, 8, 1], activation="tanh", backend=backend, dtype="float64", seed=2)
    x = rng.uniform(-1, 1, size=(5, 1))
    xt = bp.Tensor(x, requires_grad=True, backend=backend)
    u = net(xt)
    du = bp.grad(u.sum(), xt, create_graph=True)
    d2u = bp.grad(du.sum(), xt)
    h = 1e-4
    f = lambda z: net.predict(z)  # noqa: E731
    numeric_d2 = (f(x + h) - 2 * f(x) + f(x - h)) / h ** 2
    np.testing.assert_allclose(d2u.numpy(), numeric_d2, rtol=1e-5, atol=1e-6)
