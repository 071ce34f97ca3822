"""L-BFGS: exact on a convex problem, strong-Wolfe steps, agrees with scipy, after Adam."""

import numpy as np
import pytest

import backprop as bp
from backprop.optim import LBFGS
from backprop.train import gradient_kernels, step_loss

BACKENDS = [b for b in ("numpy", "cpu") if b in bp.available_backends()]


def _linear_problem(n=80, p=5, k=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    Y = X @ rng.normal(size=(p, k)) + 0.3 + 0.1 * rng.normal(size=(n, k))
    return X, Y


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_least_squares_exact(backend):
    X, Y = _linear_problem()
    net = bp.MLP([5, 2], backend=backend, dtype="float64", seed=0)
    opt = LBFGS(max_iter=100, tolerance_grad=1e-10, tolerance_change=1e-15)
    history = net.fit(X, Y, loss="mse", optimizer=opt)
    A = np.hstack([X, np.ones((len(X), 1))])
    coef = np.linalg.lstsq(A, Y, rcond=None)[0]
    np.testing.assert_allclose(net.weights[0], coef[:-1], atol=1e-6)
    np.testing.assert_allclose(net.biases[0], coef[-1], atol=1e-6)
    assert history.lbfgs.converged and history.epochs == history.lbfgs.n_iter <= 100


def test_strong_wolfe_holds_at_every_step():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(64, 2))
    Y = np.sin(X[:, :1]) * np.cos(X[:, 1:])
    net = bp.MLP([2, 16, 16, 1], activation="tanh", backend="numpy", dtype="float64", seed=0)
    opt = LBFGS(max_iter=60)
    net.fit(X, Y, loss="mse", optimizer=opt)
    assert len(opt.steps) > 10
    c1, c2 = 1e-4, 0.9
    for f, gtd, t, f_new, gtd_new in opt.steps:
        assert gtd < 0 and t > 0
        assert f_new <= f + c1 * t * gtd + 1e-15
        assert abs(gtd_new) <= c2 * abs(gtd) + 1e-15


def test_same_minimum_as_scipy():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(2)
    X = rng.normal(size=(120, 4))
    labels = (X @ rng.normal(size=(4, 3))).argmax(1)
    labels[:10] = rng.integers(0, 3, size=10)  # not separable: a finite minimum
    l2 = 0.1
    net = bp.MLP([4, 3], backend="numpy", dtype="float64", seed=0)
    start = net.weights, net.biases

    def f(theta):
        net.set_params([theta[:12].reshape(4, 3)], [theta[12:]])
        value = step_loss(gradient_kernels(net, net.input_array(X), net.target_array(labels, 120, "cross_entropy"),
                                           "cross_entropy", 0.0, l2))
        return value, np.concatenate([net.grads[0].ravel(), net.grads[1].ravel()])

    theta0 = np.concatenate([start[0][0].ravel(), start[1][0]])
    ref = scipy_optimize.minimize(f, theta0, jac=True, method="L-BFGS-B",
                                  options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 500})
    net.set_params(*start)
    net.fit(X, labels, loss="cross_entropy", optimizer=LBFGS(max_iter=500, tolerance_grad=1e-10,
                                                             tolerance_change=1e-14), l2=l2)
    mine = np.concatenate([net.weights[0].ravel(), net.biases[0]])
    np.testing.assert_allclose(f(mine)[0], ref.fun, rtol=1e-9)
    np.testing.assert_allclose(mine, ref.x, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_then_lbfgs(backend):
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, size=(100, 1))
    Y = np.sin(3 * X)
    net = bp.MLP([1, 20, 20, 1], backend=backend, dtype="float64", seed=0)
    adam = net.fit(X, Y, optimizer="adam", lr=1e-2, epochs=200)
    lbfgs = net.fit(X, Y, optimizer="lbfgs", epochs=200)
    assert lbfgs.loss[-1] < adam.loss[-1] / 10
    assert all(b <= a for a, b in zip(lbfgs.loss, lbfgs.loss[1:]))


def test_bad_options():
    with pytest.raises(ValueError):
        LBFGS(history_size=0)
    with pytest.raises(ValueError):
        LBFGS(line_search="armijo")
    assert bp.optim.LBFGS is LBFGS
    net = bp.MLP([1, 1], backend="numpy")
    for option in (dict(batch_size=4), dict(lr_schedule=lambda e: 1.0), dict(dropout=0.0) and
                   dict(clip_grad_norm=1.0), dict(checkpoint="x.npz")):
        with pytest.raises(ValueError, match="lbfgs"):
            net.fit(np.zeros((4, 1)), np.zeros((4, 1)), optimizer="lbfgs", **option)


def _function_as_model(f_and_grad, x0, backend="numpy"):
    """A model whose parameters are the variables of f (W: 1 x d; b unused, its gradient 0) and
    the closure L-BFGS takes: f at the parameters, its gradient written into net.grads."""
    d = len(x0)
    net = bp.MLP([1, d], backend=backend, dtype="float64", seed=0)
    net.set_params([np.asarray(x0, float).reshape(1, d)], [np.zeros(d)])

    def closure():
        x = np.asarray(net.backend.to_numpy(net.params[0])).reshape(-1)
        value, grad = f_and_grad(x)
        net.grads[0][...] = net.backend.asarray(grad.reshape(1, d), net.params[0].dtype)
        net.grads[1][...] = 0.0
        return value

    return net, closure


def _quadratic(x):
    A = np.diag(np.arange(1.0, len(x) + 1)) + 0.3  # symmetric positive definite, condition ~20
    c = np.linspace(-1, 1, len(x))
    return 0.5 * x @ A @ x - c @ x, A @ x - c


def _rosenbrock(x):
    value = np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    grad = np.zeros_like(x)
    grad[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    grad[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return value, grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, fun, x0", [
    ("quadratic", _quadratic, np.linspace(2.0, -1.0, 8)),
    ("rosenbrock", _rosenbrock, np.array([-1.2, 1.0, -0.5, 0.8])),
])
def test_quadratic_and_rosenbrock_against_scipy(backend, name, fun, x0):
    """The same minimum as SciPy's L-BFGS-B from the same start, to the tolerances asked."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    ref = scipy_optimize.minimize(fun, x0, jac=True, method="L-BFGS-B",
                                  options={"gtol": 1e-12, "ftol": 1e-16, "maxiter": 2000, "maxcor": 10})
    net, closure = _function_as_model(fun, x0, backend)
    result = LBFGS(max_iter=2000, tolerance_grad=1e-10, tolerance_change=1e-16).minimize(net, closure)
    mine = np.asarray(net.backend.to_numpy(net.params[0])).reshape(-1)
    assert result.converged, result.reason
    np.testing.assert_allclose(mine, ref.x, atol=1e-6)
    assert fun(mine)[0] <= ref.fun + 1e-12
    if name == "rosenbrock":
        np.testing.assert_allclose(mine, np.ones_like(x0), atol=1e-6)
    else:
        A = np.diag(np.arange(1.0, len(x0) + 1)) + 0.3
        np.testing.assert_allclose(mine, np.linalg.solve(A, np.linspace(-1, 1, len(x0))), atol=1e-8)


def test_a_loss_near_zero_keeps_updating_the_curvature_pairs():
    """The same quadratic scaled by 1e-12 (a loss of 1e-12, as a fitted physics-informed loss
    approaches): the pairs are kept by a test relative to the step's descent, not a fixed floor
    (with yᵀs > 1e-10 no pair is ever kept here and the iterations crawl along -g)."""
    scale = 1e-12

    def tiny(x):
        value, grad = _quadratic(x)
        return scale * value, scale * grad

    x0 = np.linspace(2.0, -1.0, 8)
    net, closure = _function_as_model(tiny, x0)
    result = LBFGS(max_iter=100, tolerance_grad=1e-24, tolerance_change=1e-30).minimize(net, closure)
    mine = np.asarray(net.params[0]).reshape(-1)
    A = np.diag(np.arange(1.0, 9.0)) + 0.3
    np.testing.assert_allclose(mine, np.linalg.solve(A, np.linspace(-1, 1, 8)), atol=1e-8)
    assert result.n_iter < 60
