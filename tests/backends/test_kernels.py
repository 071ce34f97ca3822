"""Every kernel of the Backend protocol on every backend and dtype, against the equation
written out here in float64, on awkward shapes."""

import warnings

import numpy as np
import pytest

from backprop.backends import ACTIVATIONS, KERNELS, get_backend
from backprop.backends.base import COMPUTE_KERNELS, PARTIAL_KERNELS, Backend, implements

from ..conftest import assert_close

# (n, p_in, p_out): a single sample, widths 1, 3, 17, 1000, batches smaller and larger than the
# widths; outputs 20, 24, 25, 32 and 33 wide and depths past 256 cross the cpu backend's kernel
# choices (register-blocked narrow kernels up to 32 wide and their register widths; Eigen; OpenBLAS)
SHAPES = [(1, 1, 1), (1, 17, 3), (7, 1, 33), (5, 17, 3), (33, 3, 17), (130, 65, 7), (3, 129, 1),
          (2, 1000, 3), (1000, 17, 1), (1000, 16, 10), (3, 1000, 17), (257, 300, 16), (2, 17, 1000),
          (500, 1000, 3), (100, 20, 20), (9, 7, 24), (130, 25, 25), (65, 20, 32), (33, 32, 33)]


def ref_act(H, name):
    return {"tanh": np.tanh, "sigmoid": lambda h: 1 / (1 + np.exp(-h)),
            "relu": lambda h: np.maximum(h, 0), "leaky_relu": lambda h: np.where(h > 0, h, 0.01 * h),
            "identity": lambda h: h}[name](H)


def ref_dact(A, name):
    """act'(H) written with A = act(H)."""
    return {"tanh": lambda a: 1 - a * a, "sigmoid": lambda a: a * (1 - a),
            "relu": lambda a: (a > 0) * 1.0, "leaky_relu": lambda a: np.where(a > 0, 1.0, 0.01),
            "identity": lambda a: np.ones_like(a)}[name](A)


def dev(bk, x, dtype):
    """A fresh backend array holding x (never an alias of x, which in-place kernels would change)."""
    return bk.asarray(np.array(x), dtype)


def host(bk, x):
    return np.asarray(bk.to_numpy(x), dtype=np.float64)


def test_every_kernel_is_implemented(backend):
    bk = get_backend(backend)
    for kernel in KERNELS:
        # the checked layer owns the public compute kernels; a backend implements _<kernel>
        name = "_" + kernel if kernel in COMPUTE_KERNELS else kernel
        if not implements(bk.name, kernel):
            # documented as missing (base.PARTIAL_KERNELS): _missing names kernel and backend
            assert getattr(type(bk), name) is getattr(Backend, name), \
                f"{bk.name} implements {name}: add it to PARTIAL_KERNELS[{kernel!r}]"
            with pytest.raises(NotImplementedError, match=f"{bk.name!r} does not implement "
                                                          f"kernel {kernel!r}"):
                getattr(bk, name)(*([None] * (getattr(Backend, name).__code__.co_argcount - 1)))
            continue
        assert getattr(type(bk), name) is not getattr(Backend, name), \
            f"{bk.name} does not override {name}" + (
                " (PARTIAL_KERNELS says it does)" if kernel in PARTIAL_KERNELS else "")
    for kernel in COMPUTE_KERNELS:
        assert getattr(type(bk), kernel) is getattr(Backend, kernel), \
            f"{backend} overrides the checked {kernel}: its checks would differ from the others'"


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (7, 33, 5), (65, 3, 129), (17, 130, 1), (1000, 17, 16),
                                   (3, 1000, 1000), (300, 257, 16), (100, 20, 20), (130, 25, 25), (65, 20, 32)])
def test_gemm(backend, dtype, rng, m, k, n, trans_a, trans_b):
    bk = get_backend(backend)
    A = rng.normal(size=(k, m) if trans_a else (m, k))
    B = rng.normal(size=(n, k) if trans_b else (k, n))
    C0 = rng.normal(size=(m, n))
    expected = (A.T if trans_a else A) @ (B.T if trans_b else B)
    got = bk.gemm(dev(bk, A, dtype), dev(bk, B, dtype), trans_a=trans_a, trans_b=trans_b)
    assert_close(host(bk, got), expected, dtype, what="gemm")
    out = dev(bk, C0, dtype)
    got = bk.gemm(dev(bk, A, dtype), dev(bk, B, dtype), out=out, trans_a=trans_a,
                  trans_b=trans_b, alpha=0.5, beta=-2.0)
    assert_close(host(bk, out), 0.5 * expected - 2.0 * C0, dtype, what="gemm alpha/beta into out")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("n,p,q", SHAPES)
def test_dense_forward(backend, dtype, rng, activation, n, p, q):
    bk = get_backend(backend)
    A, W, b = rng.normal(size=(n, p)), rng.normal(size=(p, q)), rng.normal(size=q)
    expected = ref_act(A @ W + b, activation)
    got = bk.dense_forward(dev(bk, A, dtype), dev(bk, W, dtype), dev(bk, b, dtype), activation)
    assert_close(host(bk, got), expected, dtype, what="dense_forward")
    out = bk.zeros((n, q), dtype)
    ret = bk.dense_forward(dev(bk, A, dtype), dev(bk, W, dtype), dev(bk, b, dtype),
                           activation, out=out)
    assert ret is out
    assert_close(host(bk, out), expected, dtype, what="dense_forward into out")


@pytest.mark.parametrize("activation_prev", list(ACTIVATIONS) + [None])
@pytest.mark.parametrize("n,p,q", SHAPES)
def test_dense_backward(backend, dtype, rng, activation_prev, n, p, q):
    bk = get_backend(backend)
    G, W = rng.normal(size=(n, q)), rng.normal(size=(p, q))
    A_prev = ref_act(rng.normal(size=(n, p)), activation_prev or "identity")
    dact = 1.0 if activation_prev is None else ref_dact(A_prev, activation_prev)
    args = (dev(bk, G, dtype), dev(bk, A_prev, dtype), dev(bk, W, dtype), activation_prev)
    dW, db, G_prev = bk.dense_backward(*args)
    assert_close(host(bk, dW), A_prev.T @ G, dtype, what="dW")
    assert_close(host(bk, db), G.sum(axis=0), dtype, what="db")
    assert_close(host(bk, G_prev), dact * (G @ W.T), dtype, what="G_prev")
    bufs = bk.zeros((p, q), dtype), bk.zeros((q,), dtype), bk.zeros((n, p), dtype)
    ret = bk.dense_backward(*args, *bufs)
    assert all(r is b for r, b in zip(ret, bufs))
    assert_close(host(bk, bufs[2]), dact * (G @ W.T), dtype, what="G_prev into out")
    dW, db, none = bk.dense_backward(*args, need_G_prev=False)
    assert none is None
    assert_close(host(bk, dW), A_prev.T @ G, dtype, what="dW without G_prev")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (130, 3)])
def test_activations(backend, dtype, rng, activation, shape):
    bk = get_backend(backend)
    H = 3 * rng.normal(size=shape)
    A = ref_act(H, activation)
    assert_close(host(bk, bk.activation_forward(dev(bk, H, dtype), activation)), A, dtype,
                 what="activation_forward")
    dA = rng.normal(size=shape)
    got = bk.activation_backward(dev(bk, dA, dtype), dev(bk, A, dtype), activation)
    assert_close(host(bk, got), dA * ref_dact(A, activation), dtype, what="activation_backward")
    # in place: out may alias the incoming gradient
    buf = dev(bk, dA, dtype)
    bk.activation_backward(buf, dev(bk, A, dtype), activation, out=buf)
    assert_close(host(bk, buf), dA * ref_dact(A, activation), dtype, what="in place")


def test_float64_tanh_to_a_few_ulp(backend):
    """tanh in float64 to within 8 units in the last place of numpy's, over magnitudes from 1e-300
    to 1e3 (the cpu backend computes it in registers from exp and log), with signed zeros, the
    infinities and NaN in place."""
    bk = get_backend(backend)
    rng = np.random.default_rng(7)
    mags = 10.0 ** rng.uniform(-6, 1.5, size=20000)
    special = np.array([0.0, -0.0, 1e-300, -1e-300, 1e-17, 0.5, -0.5, 19.1, 400.0, -400.0,
                        np.inf, -np.inf, np.nan])
    H = np.concatenate([mags * rng.choice([-1.0, 1.0], size=mags.size), special]).reshape(-1, 1)
    got = host(bk, bk.activation_forward(dev(bk, H, "float64"), "tanh")).reshape(-1)
    want = np.tanh(H.reshape(-1))
    finite = np.isfinite(want)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.signbit(got[finite]), np.signbit(want[finite]))
    ulp = np.abs(got[finite] - want[finite]) / np.spacing(np.abs(want[finite]))
    assert ulp.max() <= 8, (ulp.max(), H.reshape(-1)[finite][ulp.argmax()])


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (1000, 3), (33, 129)])
def test_colsum_and_dropout(backend, dtype, rng, shape):
    bk = get_backend(backend)
    G = rng.normal(size=shape)
    assert_close(host(bk, bk.colsum(dev(bk, G, dtype))), G.sum(axis=0), dtype, what="colsum")
    M = (rng.random(shape) > 0.3) / 0.7
    assert_close(host(bk, bk.dropout(dev(bk, G, dtype), dev(bk, M, dtype))), G * M, dtype,
                 what="dropout")


def ref_loss(name, F, Y):
    n, k = F.shape
    if name == "sse":
        return 0.5 * np.sum((F - Y) ** 2), F - Y
    if name == "mse":
        return np.mean((F - Y) ** 2), 2 * (F - Y) / (n * k)
    if name == "cross_entropy":
        P = np.exp(F - F.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        return -np.sum(Y * np.log(P)) / n, (P - Y) / n
    S = 1 / (1 + np.exp(-F))
    return -np.mean(Y * np.log(S) + (1 - Y) * np.log(1 - S)), (S - Y) / (n * k)


@pytest.mark.parametrize("loss", ["sse", "mse", "cross_entropy", "bce"])
@pytest.mark.parametrize("n,k", [(1, 1), (1, 7), (33, 1), (65, 10), (7, 129)])
def test_loss(backend, dtype, rng, loss, n, k):
    bk = get_backend(backend)
    F = 2 * rng.normal(size=(n, k))
    if loss == "cross_entropy":
        Y = np.eye(k)[rng.integers(0, k, size=n)]
    elif loss == "bce":
        Y = rng.random((n, k))
    else:
        Y = rng.normal(size=(n, k))
    value_ref, G_ref = ref_loss(loss, F, Y)
    value, G = bk.loss(loss, dev(bk, F, dtype), dev(bk, Y, dtype))
    assert_close(float(value), value_ref, dtype, scale=max(abs(value_ref), 1.0), what=f"{loss} value")
    assert_close(host(bk, G), G_ref, dtype, what=f"{loss} gradient")


def test_cross_entropy_is_stable_for_large_logits(backend, dtype):
    bk = get_backend(backend)
    F = np.array([[1000.0, 0.0, -1000.0], [-500.0, 500.0, 0.0]])
    Y = np.array([[1.0, 0, 0], [0, 0, 1.0]])
    value, G = bk.loss("cross_entropy", dev(bk, F, dtype), dev(bk, Y, dtype))
    assert np.isfinite(float(value)) and abs(float(value) - 250.0) < 1e-3
    assert np.all(np.isfinite(host(bk, G)))
    value, G = bk.loss("bce", dev(bk, F[:, :2], dtype), dev(bk, Y[:, :2], dtype))
    assert np.isfinite(float(value)) and np.all(np.isfinite(host(bk, G)))


def test_sigmoid_of_large_inputs_warns_nothing(backend, dtype):
    """sigmoid and bce at ±100, ±1000 (where exp(-H) overflows): the limits, no warning."""
    bk = get_backend(backend)
    H = np.array([[-1000.0, -100.0, -30.0, -1e-3, 0.0, 1e-3, 30.0, 100.0, 1000.0, -np.inf, np.inf]])
    Y = np.full(H.shape, 0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's RuntimeWarning: overflow in exp fails the test
        A = host(bk, bk.activation_forward(dev(bk, H, dtype), "sigmoid"))
        value, G = bk.loss("bce", dev(bk, H[:, :-2], dtype), dev(bk, Y[:, :-2], dtype))
    with np.errstate(over="ignore"):
        want = 1 / (1 + np.exp(-H))
    assert_close(A, want, dtype, what="sigmoid")
    assert A[0, 0] == 0.0 and A[0, -2] == 0.0 and A[0, -1] == 1.0
    assert_close(host(bk, G), (want[:, :-2] - Y[:, :-2]) / (H.size - 2), dtype, what="bce gradient")
    assert np.isfinite(float(value))


def test_numpy_sigmoid_keeps_the_formulas_numbers(dtype, rng):
    """1 / (1 + exp(-H)): the same bits for H >= 0, within a few ulp below (e / (1 + e), as
    close to the exact value: each is within 3 ulp of it)."""
    bk = get_backend("numpy")
    H = (3 * rng.normal(size=(200, 50))).astype(dtype)
    A = bk.activation_forward(H.copy(), "sigmoid")
    want = 1 / (1 + np.exp(-H))
    assert A.dtype == H.dtype
    assert np.array_equal(A[H >= 0], want[H >= 0])
    ulp = np.abs(A - want) / np.spacing(want)
    assert ulp.max() <= 4, ulp.max()


@pytest.mark.parametrize("shape", [(1, 1), (17, 3), (129,)])
def test_weight_penalty(backend, dtype, rng, shape):
    bk = get_backend(backend)
    W, dW = rng.normal(size=shape), rng.normal(size=shape)
    buf = dev(bk, dW, dtype)
    value = bk.weight_penalty(dev(bk, W, dtype), buf, 0.3, 0.7)
    assert_close(float(value), 0.3 * np.abs(W).sum() + 0.35 * (W * W).sum(), dtype, what="penalty")
    assert_close(host(bk, buf), dW + 0.3 * np.sign(W) + 0.7 * W, dtype, what="penalty gradient")


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
@pytest.mark.parametrize("shape", [(1, 1), (17, 33), (1000,)])
def test_sgd_update(backend, dtype, rng, shape, momentum, nesterov):
    bk = get_backend(backend)
    p, g, v = rng.normal(size=shape), rng.normal(size=shape), rng.normal(size=shape)
    P = dev(bk, p, dtype)
    V = dev(bk, v, dtype) if momentum else None
    bk.sgd_update(P, dev(bk, g, dtype), V, 0.1, momentum, nesterov)
    v_new = momentum * v + g if momentum else g
    step = g + momentum * v_new if nesterov else v_new
    assert_close(host(bk, P), p - 0.1 * step, dtype, what="param")
    if momentum:
        assert_close(host(bk, V), v_new, dtype, what="velocity")


@pytest.mark.parametrize("shape", [(1, 1), (17, 33), (1000,)])
def test_adam_update(backend, dtype, rng, shape):
    bk = get_backend(backend)
    p, g = rng.normal(size=shape), rng.normal(size=shape)
    m, v = rng.normal(size=shape), rng.random(shape)
    P, M, V = dev(bk, p, dtype), dev(bk, m, dtype), dev(bk, v, dtype)
    bk.adam_update(P, dev(bk, g, dtype), M, V, 1e-2, 0.9, 0.999, 1e-8, 3)
    m_new, v_new = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
    expected = p - 1e-2 * (m_new / (1 - 0.9 ** 3)) / (np.sqrt(v_new / (1 - 0.999 ** 3)) + 1e-8)
    assert_close(host(bk, P), expected, dtype, what="param")
    assert_close(host(bk, M), m_new, dtype, what="m")
    assert_close(host(bk, V), v_new, dtype, what="v")


def test_memory_kernels_round_trip(backend, dtype, rng):
    bk = get_backend(backend)
    x = rng.normal(size=(3, 5))
    X = dev(bk, x, dtype)
    assert tuple(X.shape) == (3, 5) and str(X.dtype) == dtype
    assert_close(host(bk, X), x, dtype, what="asarray/to_numpy")
    assert not np.any(host(bk, bk.zeros((4, 2), dtype)))
    assert tuple(bk.empty((4, 2), dtype).shape) == (4, 2)
    bk.synchronize()
