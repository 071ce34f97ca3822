"""The tape: order, freeing, accumulation, bp.grad, and the Tensor's attributes."""

import numpy as np
import pytest

import backprop as bp
from backprop.backends import why_unavailable


def test_a_chain_of_100000_operations_backpropagates():
    x = bp.Tensor(np.array([0.5]), requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    (y.sum() * 3.0).backward()
    assert x.grad.tolist() == [3.0]


def test_graph_is_freed_after_backward_unless_retained(backend):
    x = bp.Tensor(np.arange(3.0), requires_grad=True, backend=backend)
    L = (x.tanh() * x).sum()
    L.backward(retain_graph=True)
    first = np.array(x.backend.to_numpy(x.grad))
    L.backward()  # the graph was retained: a second pass accumulates
    np.testing.assert_allclose(np.array(x.backend.to_numpy(x.grad)), 2 * first)
    with pytest.raises(RuntimeError, match="second time.*'sum'.*retain_graph=True"):
        L.backward()


def test_each_leaf_accumulates_once_per_backward():
    """x feeds many paths; its grad is added to once (with the sum of the paths)."""
    x = bp.Tensor(np.array([2.0]), requires_grad=True)
    x.grad[...] = 10.0
    grad_buffer = x.grad
    L = (x * x + x * 3.0 + x.exp() - bp.sin(x)).sum()
    L.backward()
    expected = 10.0 + 2 * 2.0 + 3.0 + np.exp(2.0) - np.cos(2.0)
    assert x.grad is grad_buffer  # += into the same array
    np.testing.assert_allclose(x.grad, [expected], rtol=1e-15)


def test_grad_leaves_the_grad_attributes_alone_and_returns_tensors(backend):
    x = bp.Tensor(np.array([1.0, 2.0]), requires_grad=True, backend=backend)
    w = bp.Tensor(np.array([3.0, 4.0]), requires_grad=True, backend=backend)
    gx, gw = bp.grad((x * w).sum(), [x, w])
    assert isinstance(gx, bp.Tensor) and gx.numpy().tolist() == [3.0, 4.0]
    assert gw.numpy().tolist() == [1.0, 2.0]
    assert x._grad is None and w._grad is None
    with pytest.raises(RuntimeError, match="inputs\\[0\\] was not used"):
        bp.grad((w * w).sum(), [x])
    assert bp.grad((w * w).sum(), [x, w], allow_unused=True)[0] is None


def test_hessian_vector_product():
    """H v for f(x) = Σ x_i³ x_{i+1}: the gradient of (∇f · v)."""
    rng = np.random.default_rng(0)
    x0, v = rng.normal(size=5), rng.normal(size=5)
    x = bp.Tensor(x0, requires_grad=True)
    g = bp.grad((x[:-1] ** 3 * x[1:]).sum(), x, create_graph=True)
    Hv = bp.grad((g * v).sum(), x)
    H = np.zeros((5, 5))
    for i in range(4):
        H[i, i] += 6 * x0[i] * x0[i + 1]
        H[i, i + 1] += 3 * x0[i] ** 2
        H[i + 1, i] += 3 * x0[i] ** 2
    np.testing.assert_allclose(Hv.numpy(), H @ v, rtol=1e-12)


def test_backward_with_create_graph_gives_grad_tensor():
    x = bp.Tensor(np.array([0.3, -0.2]), requires_grad=True)
    (x ** 3).sum().backward(create_graph=True)
    assert isinstance(x.grad_tensor, bp.Tensor)
    np.testing.assert_allclose(x.grad, 3 * x.value ** 2)
    x.grad_tensor.sum().backward()
    np.testing.assert_allclose(x.grad, 3 * x.value ** 2 + 6 * x.value)


def test_nonscalar_backward_needs_a_gradient(backend):
    x = bp.Tensor(np.ones((2, 3)), requires_grad=True, backend=backend)
    Y = x * 2.0
    with pytest.raises(ValueError, match="starts from a scalar.*shape \\(2, 3\\)"):
        Y.backward()
    Y.backward(np.full((2, 3), 0.5))
    assert np.array(x.backend.to_numpy(x.grad)).tolist() == [[1.0] * 3] * 2
    with pytest.raises(ValueError, match="grad of shape"):
        (x * 2.0).backward(np.ones(3))


def test_tensor_attributes(backend, dtype):
    v = np.arange(6.0).reshape(2, 3)
    t = bp.Tensor(v, requires_grad=True, backend=backend, dtype=dtype)
    assert t.shape == (2, 3) and t.dtype == np.dtype(dtype) and t.backend.name == backend
    assert t.numpy().dtype == np.dtype(dtype)
    assert np.array(t.backend.to_numpy(t.grad)).tolist() == [[0.0] * 3] * 2  # zeros before backward
    assert bp.Tensor(np.float32(1.5)).dtype == np.float32 and bp.Tensor(1.5).shape == ()
    assert bp.Tensor([1, 2]).dtype == np.float64
    d = (t * 2.0).detach()
    assert not d.requires_grad and d.is_leaf
    with bp.no_grad():
        assert not (t * 2.0).requires_grad
    (t * t).sum().backward()
    t.zero_grad()
    assert not np.any(np.array(t.backend.to_numpy(t.grad)))


def test_constants_and_operators_mix_with_numbers_and_arrays():
    x = bp.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (2.0 * x + np.array([1.0, 1.0]) - 1 / x) ** 2 / 3.0
    y.sum().backward()
    v = x.value
    np.testing.assert_allclose(x.grad, 2 * (2 * v + 1 - 1 / v) * (2 + 1 / v ** 2) / 3.0)
    assert isinstance(np.array([1.0, 2.0]) * x, bp.Tensor)


def test_legacy_functions_of_the_readme_example(rng):
    from backprop.tensor import activation, add, sse
    net = bp.MLP([3, 5, 2], activation="tanh", dtype="float64", seed=0)
    X, Y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    loss, grads = net.loss_and_grad(X, Y, "sse")
    W = [bp.Tensor(w, requires_grad=True) for w in net.weights]
    b = [bp.Tensor(c, requires_grad=True) for c in net.biases]
    Xt = bp.Tensor(X, requires_grad=True)
    A1 = activation(add(bp.einsum("ni,ij->nj", Xt, W[0]), b[0]), "tanh")
    L = sse(add(bp.einsum("ni,ij->nj", A1, W[1]), b[1]), Y)
    L.backward()
    assert float(L.item()) == pytest.approx(loss)
    for l in range(2):
        np.testing.assert_allclose(W[l].grad, grads.weights[l], rtol=1e-12)
        np.testing.assert_allclose(b[l].grad, grads.biases[l], rtol=1e-12)
    np.testing.assert_allclose(Xt.grad, grads.X, rtol=1e-12)


def test_grad_of_several_outputs_with_grad_outputs(backend):
    x = bp.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True, backend=backend)
    y1, y2 = x * x, x.sin()
    v1, v2 = np.array([1.0, 0.5, 0.0]), np.array([2.0, 1.0, 1.0])
    gx = bp.grad([y1, y2], x, grad_outputs=[v1, v2])
    np.testing.assert_allclose(gx.numpy(), v1 * 2 * x.numpy() + v2 * np.cos(x.numpy()), rtol=1e-15)


def test_the_backend_follows_the_array(backend):
    """An array of the cuda backend makes a cuda Tensor; numpy arrays default to "numpy"."""
    be = bp.get_backend(backend)
    t = bp.Tensor(be.asarray(np.ones((2, 2)), np.float32))
    assert t.backend.name == ("cuda" if backend == "cuda" else "numpy")
    assert t.dtype == np.float32 and t.shape == (2, 2)
    assert bp.Tensor(np.ones(2), backend=backend).backend is be
    assert np.asarray(bp.Tensor(np.arange(3.0), backend=backend)).tolist() == [0.0, 1.0, 2.0]


def test_grad_outputs_one_per_output(backend):
    """grad_outputs (and backward's grads) shorter or longer than the outputs is an error
    naming both counts, not a silently dropped output."""
    x = bp.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True, backend=backend)
    y1, y2 = x * x, x.sin()
    v = np.ones(3)
    with pytest.raises(ValueError, match="grad: 1 gradient\\(s\\) given for 2 output\\(s\\)"):
        bp.grad([y1, y2], x, grad_outputs=[v], retain_graph=True)
    with pytest.raises(ValueError, match="grad: 3 gradient\\(s\\) given for 2 output\\(s\\)"):
        bp.grad([y1, y2], x, grad_outputs=[v, v, v], retain_graph=True)
    with pytest.raises(ValueError, match="grad: 2 gradient\\(s\\) given for 1 output\\(s\\)"):
        bp.grad(y1, x, grad_outputs=[v, v], retain_graph=True)
    with pytest.raises(ValueError, match="backward: 1 gradient\\(s\\) given for 2 output\\(s\\)"):
        bp.tensor.backward([y1, y2], [v])
    assert x._grad is None  # nothing ran
    bp.tensor.backward([y1, y2], [v, v])
    np.testing.assert_allclose(x.backend.to_numpy(x.grad), 2 * x.numpy() + np.cos(x.numpy()),
                               rtol=1e-15)


def test_grad_of_an_input_given_twice(backend):
    x = bp.Tensor(np.array([1.0, 2.0]), requires_grad=True, backend=backend)
    w = bp.Tensor(np.array([3.0, 4.0]), requires_grad=True, backend=backend)
    gx1, gw, gx2 = bp.grad((x * x * w).sum(), [x, w, x])
    assert gx1.numpy().tolist() == [6.0, 16.0] and gx2.numpy().tolist() == [6.0, 16.0]
    assert gw.numpy().tolist() == [1.0, 4.0]
    g1, g2 = bp.grad((x ** 3).sum(), [x, x], create_graph=True)
    assert g1.numpy().tolist() == g2.numpy().tolist() == [3.0, 12.0]
    assert bp.grad(g1.sum(), x).numpy().tolist() == [6.0, 12.0]


def test_a_freed_graph_is_the_retain_graph_error_with_create_graph_too(backend):
    x = bp.Tensor(np.arange(3.0), requires_grad=True, backend=backend)
    L = (x.tanh() * x).sum()
    L.backward()
    with pytest.raises(RuntimeError, match="second time.*'sum'.*retain_graph=True"):
        L.backward(create_graph=True)
    with pytest.raises(RuntimeError, match="second time.*'sum'.*retain_graph=True"):
        bp.grad(L, x, create_graph=True)


def _mlp_loss(backend):
    net = bp.MLP([2, 3, 1], backend=backend, dtype="float64", seed=0)
    X = np.random.default_rng(0).normal(size=(4, 2))
    return net, net(bp.Tensor(X, backend=backend))


def _zero(net):
    for p in net.parameters():
        p.zero_grad()


def _grads(net):
    return [np.array(net.backend.to_numpy(p.grad)) for p in net.parameters()]


@pytest.mark.parametrize("create_graph", [False, True])
def test_a_float32_seed_is_cast_to_the_graphs_dtype(backend, create_graph):
    """A float32 seed (a number, an array, a Tensor) of a float64 graph is used as float64: the
    gradients are float64 and equal to those of the float64 seed."""
    net, F = _mlp_loss(backend)
    (F * F).mean().backward(retain_graph=True)
    unit = _grads(net)
    seeds = [np.float32(2.0), np.array(2.0, np.float32), bp.Tensor(np.float32(2.0), backend=backend)]
    for seed in seeds:
        _zero(net)
        (F * F).mean().backward(seed, retain_graph=True, create_graph=create_graph)
        for g, u in zip(_grads(net), unit):
            assert g.dtype == np.float64, type(seed)
            np.testing.assert_allclose(g, 2 * u, rtol=1e-15, err_msg=str(type(seed)))
    G = np.full(F.shape, 0.5, np.float32)
    for seed in (G, bp.Tensor(G, backend=backend)):
        _zero(net)
        F.backward(seed, retain_graph=True, create_graph=create_graph)
        assert all(g.dtype == np.float64 for g in _grads(net))
        W = net.parameters()[0]
        gW = bp.grad(F, W, grad_outputs=seed, retain_graph=True, create_graph=create_graph)
        assert gW.dtype == np.float64
        np.testing.assert_allclose(gW.numpy(), _grads(net)[0], rtol=1e-15)


def test_a_seed_of_another_shape_or_backend_is_refused(backend):
    net, F = _mlp_loss(backend)
    for seed in (np.ones(4), np.ones((4, 1, 1)), bp.Tensor(np.ones((1, 4)), backend=backend)):
        with pytest.raises(ValueError, match="grad of shape"):
            F.backward(seed, retain_graph=True)
    with pytest.raises(ValueError, match="grad of shape"):
        F.sum().backward(np.ones(1))
    other = "cpu" if backend == "numpy" else "numpy"
    if why_unavailable(other) is None:
        with pytest.raises(TypeError, match="grad is on backend"):
            F.backward(bp.Tensor(np.ones((4, 1)), backend=other), retain_graph=True)
