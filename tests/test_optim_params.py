"""Optimizers over lists of parameter Tensors (PyTorch's convention): the same bits as fit's step,
the same iterates as torch.optim, joint training, skipped parameters, groups, state, bad input."""

import numpy as np
import pytest

import backprop as bp
from backprop.optim import LBFGS

BACKENDS = [b for b in ("numpy", "cpu") if b in bp.available_backends()]
DTYPES = ["float32", "float64"]


def _data(n=37, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (n, 3))
    return X, np.sin(X @ np.array([[1.0, -2.0], [0.5, 1.0], [2.0, 0.3]]))


OPTIMIZERS = {
    "gd": (lambda p: bp.optim.GD(p, lr=0.1), lambda: bp.optim.GD(lr=0.1)),
    "sgd": (lambda p: bp.optim.SGD(p, lr=0.05, momentum=0.9),
            lambda: bp.optim.SGD(lr=0.05, momentum=0.9)),
    "nesterov": (lambda p: bp.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
                 lambda: bp.optim.SGD(lr=0.05, momentum=0.9, nesterov=True)),
    "adam": (lambda p: bp.optim.Adam(p, lr=1e-2), lambda: bp.optim.Adam(lr=1e-2)),
    "adamw": (lambda p: bp.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
              lambda: bp.optim.AdamW(lr=1e-2, weight_decay=0.1)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_parameter_list_gives_the_bits_of_fit(backend, dtype, name):
    """opt.step() after L.backward() of the built-in loss equals fit's kernel path and the fused
    epoch, bit for bit (the same kernels on the same arrays)."""
    X, Y = _data()
    make_list, make_rule = OPTIMIZERS[name]
    ref = bp.MLP([3, 8, 2], backend=backend, dtype=dtype, seed=1)
    fused = ref.copy()
    ours = ref.copy()
    ref.fit(X, Y, loss="mse", optimizer=make_rule(), epochs=6, shuffle=False, fused=False)
    if name != "adamw":  # no fused path knows AdamW
        fused.fit(X, Y, loss="mse", optimizer=make_rule(), epochs=6, shuffle=False)
    Xd, Yd = ours.input_array(X), ours.target_array(Y, X.shape[0], "mse")
    opt = make_list(ours.parameters())
    for _ in range(6):
        opt.zero_grad()
        L = bp.tensor.loss("mse", ours(Xd, standardize=False), bp.Tensor(Yd, backend=backend))
        L.backward()
        opt.step()
    for a, b in zip(ours.weights + ours.biases, ref.weights + ref.biases):
        np.testing.assert_array_equal(a, b)
    if name != "adamw":
        for a, b in zip(fused.weights + fused.biases, ref.weights + ref.biases):
            np.testing.assert_array_equal(a, b)


def test_two_networks_and_a_scalar_trained_jointly():
    X, Y = _data()
    a = bp.MLP([3, 6, 2], dtype="float64", seed=0)
    b = bp.MLP([3, 5, 2], dtype="float64", seed=1)
    w = bp.Tensor(np.array(0.25), requires_grad=True)  # a 0-d parameter
    opt = bp.optim.Adam([*a.parameters(), *b.parameters(), w], lr=1e-2)
    Yt = bp.Tensor(Y)

    def objective():
        return bp.mse(a(X) * w + b(X) * (1 - w), Yt)
    first = objective().item()
    for _ in range(200):
        opt.zero_grad()
        objective().backward()
        opt.step()
    assert objective().item() < 0.2 * first
    assert float(w.value) != 0.25
    np.testing.assert_array_equal(a.predict(X), a(X).numpy())  # the model's own arrays moved


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_parameter_without_gradient_is_skipped(backend):
    """As torch: a parameter the loss did not use has no gradient after zero_grad and keeps its
    value, its slots and its step count."""
    used = bp.Tensor(np.ones(3), requires_grad=True, backend=backend)
    unused = bp.Tensor(np.full(2, 5.0), requires_grad=True, backend=backend)
    opt = bp.optim.Adam([used, unused], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        (used * used).sum().backward()
        assert not unused.has_grad
        opt.step()
    np.testing.assert_array_equal(unused.numpy(), [5.0, 5.0])
    state = opt.state_dict()["state"]
    assert state[0]["step"] == 3 and state[1]["step"] == 0
    assert not np.any(state[1]["m"])
    assert np.all(used.numpy() < 1)


def test_param_groups_and_lr_setting():
    p = bp.Tensor(np.ones(2), requires_grad=True)
    q = bp.Tensor(np.ones(2), requires_grad=True)
    opt = bp.optim.SGD([{"params": [p]}, {"params": [q], "lr": 0.5}], lr=0.1)
    (p.sum() + q.sum()).backward()
    opt.step()
    np.testing.assert_allclose(p.numpy(), [0.9, 0.9], rtol=0, atol=1e-15)
    np.testing.assert_allclose(q.numpy(), [0.5, 0.5], rtol=0, atol=1e-15)
    opt.param_groups[1]["lr"] = 0.25
    opt.step()  # the gradients are still there: a second step with them
    np.testing.assert_allclose(q.numpy(), [0.25, 0.25], rtol=0, atol=1e-15)
    opt.lr = 0.0  # a schedule: every group
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]


@pytest.mark.parametrize("name", ["sgd", "nesterov", "adam", "adamw"])
def test_state_dict_round_trip_continues_the_same_run(name):
    X, Y = _data()
    make_list = OPTIMIZERS[name][0]
    a = bp.MLP([3, 5, 2], dtype="float64", seed=0)
    b = a.copy()
    Yt = bp.Tensor(Y)

    def steps(net, opt, k):
        for _ in range(k):
            opt.zero_grad()
            bp.mse(net(X), Yt).backward()
            opt.step()
    opt_a = make_list(a.parameters())
    steps(a, opt_a, 5)
    saved = opt_a.state_dict()
    b.set_params(a.weights, a.biases)
    opt_b = make_list(b.parameters())
    opt_b.load_state_dict(saved)
    steps(a, opt_a, 4)
    steps(b, opt_b, 4)
    for x, y in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(x, y)


def test_load_state_dict_checks_before_changing_anything():
    p = bp.Tensor(np.ones(3), requires_grad=True)
    opt = bp.optim.Adam([p])
    other = bp.optim.Adam([bp.Tensor(np.ones(4), requires_grad=True)])
    with pytest.raises(ValueError, match="has shape"):
        opt.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})


def test_nan_gradient_raises_and_moves_nothing():
    p = bp.Tensor(np.ones(3), requires_grad=True)
    q = bp.Tensor(np.ones(2), requires_grad=True)
    opt = bp.optim.Adam([p, q], lr=0.1)
    (p.sum() + (q * np.array([1.0, np.nan])).sum()).backward()
    with pytest.raises(bp.NonFiniteLossError):
        opt.step()
    np.testing.assert_array_equal(p.numpy(), np.ones(3))
    np.testing.assert_array_equal(q.numpy(), np.ones(2))
    assert opt.state_dict()["state"][0]["step"] == 0


def test_bad_parameter_lists_are_refused_at_construction():
    p = bp.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(TypeError, match="not a Tensor"):
        bp.optim.SGD([p, np.ones(2)])
    with pytest.raises(ValueError, match="leaf"):
        bp.optim.SGD([p * 2])
    with pytest.raises(ValueError, match="does not require grad"):
        bp.optim.SGD([bp.Tensor(np.ones(2))])
    with pytest.raises(ValueError, match="more than once"):
        bp.optim.Adam([p, p])
    with pytest.raises(ValueError, match="more than once"):
        bp.optim.Adam([{"params": [p]}, {"params": [p]}])
    with pytest.raises(ValueError, match="empty"):
        bp.optim.Adam([])
    with pytest.raises(ValueError, match="two dtypes"):
        bp.optim.Adam([p, bp.Tensor(np.ones(2, np.float32), requires_grad=True)])
    if "cpu" in BACKENDS:
        with pytest.raises(ValueError, match="two backends"):
            bp.optim.Adam([p, bp.Tensor(np.ones(2), requires_grad=True, backend="cpu")])
    with pytest.raises(TypeError, match="lr=0.1"):
        bp.optim.SGD(0.1)
    with pytest.raises(TypeError, match="not one Tensor"):
        bp.optim.SGD(p)
    with pytest.raises(ValueError, match="unknown option"):
        bp.optim.SGD([{"params": [p], "betas": (0.9, 0.9)}])
    with pytest.raises(ValueError, match="momentum"):
        bp.optim.SGD([{"params": [p], "momentum": 2.0}])
    with pytest.raises(RuntimeError, match="needs parameters"):
        bp.optim.Adam(lr=1e-3).step()
    net = bp.MLP([3, 4, 2], dtype="float64", seed=0)
    X, Y = _data()
    for opt in (bp.optim.Adam(net.parameters()), LBFGS(net.parameters())):
        with pytest.raises(ValueError, match="made over parameter Tensors"):
            net.fit(X, Y, optimizer=opt, epochs=1)


def _rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] * x[0]) ** 2


def test_lbfgs_over_tensors_minimizes_rosenbrock():
    x = bp.Tensor(np.array([-1.5, 2.0]), requires_grad=True)
    opt = LBFGS([x], history_size=10, max_iter=200, line_search_fn="strong_wolfe",
                tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        L = _rosenbrock(x)
        L.backward()
        return L
    first = opt.step(closure)
    assert first == pytest.approx(_rosenbrock(np.array([-1.5, 2.0])))
    np.testing.assert_allclose(x.numpy(), [1.0, 1.0], atol=1e-6)


def test_lbfgs_without_line_search_keeps_the_last_finite_point():
    x = bp.Tensor(np.array([3.0]), requires_grad=True)
    opt = LBFGS([x], lr=1e3, max_iter=50, line_search=None)

    def closure():
        opt.zero_grad()
        L = (x ** 4).sum() * 1e30
        L.backward()
        return L
    with pytest.raises(bp.NonFiniteLossError):
        opt.step(closure)
    assert np.isfinite(x.numpy()).all()
    assert np.isfinite((x.numpy() ** 4).sum() * 1e30)


torch = None
try:
    import torch
except ImportError:  # the torch comparisons below are skipped with this reason
    pass
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


@needs_torch
@pytest.mark.parametrize("name", ["sgd", "nesterov", "adam", "adamw"])
def test_optimizers_over_lists_match_torch(name):
    """50 steps of each optimizer on two parameters (one 0-d) with the same gradients."""
    rng = np.random.default_rng(3)
    p0, s0 = rng.normal(size=(3, 4)), np.array(0.7)
    ours = [bp.Tensor(p0.copy(), requires_grad=True), bp.Tensor(s0.copy(), requires_grad=True)]
    theirs = [torch.tensor(p0, requires_grad=True), torch.tensor(s0, requires_grad=True)]
    opt = OPTIMIZERS[name][0](ours)
    topt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
            "nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
            "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
            "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1)}[name](theirs)
    for _ in range(50):
        grads = [rng.normal(size=(3, 4)), np.array(rng.normal())]
        for t, tt, g in zip(ours, theirs, grads):
            t.grad = g.copy()
            tt.grad = torch.tensor(g)
        opt.step()
        topt.step()
    for t, tt in zip(ours, theirs):
        np.testing.assert_allclose(t.numpy(), tt.detach().numpy(), rtol=1e-12, atol=1e-14)


@needs_torch
def test_lbfgs_iterates_match_torch_on_rosenbrock_and_a_network():
    x = bp.Tensor(np.array([-1.5, 2.0]), requires_grad=True)
    xt = torch.tensor([-1.5, 2.0], dtype=torch.float64, requires_grad=True)
    opt = LBFGS([x], history_size=10, max_iter=25, line_search_fn="strong_wolfe",
                tolerance_grad=0.0, tolerance_change=0.0)
    topt = torch.optim.LBFGS([xt], history_size=10, max_iter=25, line_search_fn="strong_wolfe",
                             tolerance_grad=0.0, tolerance_change=0.0)

    def closure():
        opt.zero_grad()
        L = _rosenbrock(x)
        L.backward()
        return L

    def tclosure():
        topt.zero_grad()
        L = (1 - xt[0]) ** 2 + 100 * (xt[1] - xt[0] ** 2) ** 2
        L.backward()
        return L
    opt.step(closure)
    topt.step(tclosure)
    np.testing.assert_allclose(x.numpy(), xt.detach().numpy(), rtol=1e-10)

    X, Y = _data(20)
    net = bp.MLP([3, 6, 2], dtype="float64", seed=4)
    tw = [torch.tensor(a, requires_grad=True) for a in net.weights + net.biases]
    opt = LBFGS(net.parameters(), history_size=5, max_iter=15, line_search_fn="strong_wolfe",
                tolerance_grad=0.0, tolerance_change=0.0)
    topt = torch.optim.LBFGS(tw[:2] + tw[2:], history_size=5, max_iter=15,
                             line_search_fn="strong_wolfe", tolerance_grad=0.0,
                             tolerance_change=0.0)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)

    def closure_net():
        opt.zero_grad()
        L = bp.mse(net(X), bp.Tensor(Y))
        L.backward()
        return L

    def tclosure_net():
        topt.zero_grad()
        H = torch.tanh(Xt @ tw[0] + tw[2])
        L = torch.nn.functional.mse_loss(H @ tw[1] + tw[3], Yt)
        L.backward()
        return L
    opt.step(closure_net)
    topt.step(tclosure_net)
    for a, t in zip(net.weights + net.biases, tw):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_lbfgs_refuses_bad_options_at_construction():
    for bad, match in (({"max_eval": "x"}, "max_eval"), ({"max_eval": -1}, "max_eval"),
                       ({"max_eval": 0}, "max_eval"), ({"lr": 0}, "lr must be > 0"),
                       ({"max_iter": 0}, "max_iter"), ({"line_search": "armijo"}, "line_search")):
        with pytest.raises(ValueError, match=match):
            LBFGS(**bad)
