"""Derivatives of an MLP w.r.t. its inputs (the Taylor-mode kernels and the ``derivatives`` node),
against float64 central finite differences and against the recorded path
(``bp.grad(..., create_graph=True)``) on the numpy reference; the cpu backend's kernels against
numpy (awkward sizes, bit reproducibility), and every backend's derivatives node and residual
gradients against numpy in the same dtype (cuda under the emulator without a GPU)."""

import pathlib
import re

import numpy as np
import pytest

import backprop as bp
from backprop.backends import get_backend
from backprop.backends.base import implements

SECOND = ((0, 0), (0, 1), (1, 1))


def make_net(activation, dtype="float64", backend="numpy", layers=(2, 7, 6, 1), seed=3):
    return bp.MLP(list(layers), activation=activation, backend=backend, dtype=dtype, seed=seed)


def inputs(n=6, d=2, seed=1):
    return np.random.default_rng(seed).normal(size=(n, d))


def fd_first(net, X, i, h=1e-5):
    E = np.zeros(X.shape[1]); E[i] = h
    return (net.predict(X + E) - net.predict(X - E)) / (2 * h)


def fd_second(net, X, i, j, h=1e-4):
    Ei = np.zeros(X.shape[1]); Ei[i] = h
    Ej = np.zeros(X.shape[1]); Ej[j] = h
    f = net.predict
    return (f(X + Ei + Ej) - f(X + Ei - Ej) - f(X - Ei + Ej) + f(X - Ei - Ej)) / (4 * h * h)


def recorded(net, X, first, second):
    """u, du..., d2u... by recording the backward pass (output width 1)."""
    x = bp.Tensor(X, requires_grad=True, backend=net.backend.name, dtype=net.dtype.name)
    u = net(x)
    du = bp.grad(u.sum(), x, create_graph=True)
    cols = {i: du[:, i:i + 1] for i in range(X.shape[1])}
    d2 = []
    for i, j in second:
        g = bp.grad(cols[i].sum(), x, create_graph=True, allow_unused=True)
        d2.append(g[:, j:j + 1] if g is not None else bp.Tensor(np.zeros((X.shape[0], 1))))
    return [u] + [cols[i] for i in first] + d2


def rel(a, b, floor=1e-30):
    """max |a - b| relative to the scale of b (at least ``floor``)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), floor)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "identity"])
def test_first_and_second_derivatives(activation):
    net, X = make_net(activation), inputs()
    out = net.derivatives(X, first=(0, 1), second=SECOND)
    assert len(out) == 1 + 2 + len(SECOND) and all(o.shape == (6, 1) for o in out)
    assert rel(out[0].numpy(), net.predict(X)) < 1e-14
    for a, i in enumerate((0, 1)):
        assert rel(out[1 + a].numpy(), fd_first(net, X, i)) < 1e-8
    for q, (i, j) in enumerate(SECOND):
        assert rel(out[3 + q].numpy(), fd_second(net, X, i, j), floor=1.0) < 1e-5
    for got, ref in zip(out, recorded(net, X, (0, 1), SECOND)):
        assert rel(got.numpy(), ref.numpy()) < 1e-12


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_first_derivatives_through_relu(activation):
    net, X = make_net(activation), inputs()
    u, ux, ut = net.derivatives(X, first=(0, 1))
    assert rel(ux.numpy(), fd_first(net, X, 0)) < 1e-8
    assert rel(ut.numpy(), fd_first(net, X, 1)) < 1e-8
    for got, ref in zip((u, ux, ut), recorded(net, X, (0, 1), ())):
        assert rel(got.numpy(), ref.numpy()) < 1e-12


def test_names_and_several_outputs():
    net = make_net("tanh", layers=(2, 5, 3))
    X = inputs()
    by_name = net.derivatives(X, first=("t",), second=("xt", ("t", "t")), names=("x", "t"))
    by_index = net.derivatives(X, first=(1,), second=((0, 1), (1, 1)))
    for a, b in zip(by_name, by_index):
        assert a.shape == (6, 3)
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # the second derivative d²u/dx dt needs the x stream, which is computed but not returned
    assert len(by_name) == 4
    assert rel(by_name[2].numpy(), fd_second(net, X, 0, 1), floor=1.0) < 1e-5


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_float32_against_float64(activation):
    """float32 agrees with float64 to 1e-4 of the scale (first) and 1e-3 (second)."""
    X = inputs()
    out32 = make_net(activation, "float32").derivatives(X, first=(0, 1), second=SECOND)
    out64 = make_net(activation, "float64").derivatives(X, first=(0, 1), second=SECOND)
    assert all(o.numpy().dtype == np.float32 for o in out32)
    for k, (a, b) in enumerate(zip(out32, out64)):
        assert rel(a.numpy(), b.numpy()) < (1e-4 if k < 3 else 1e-3), k


def residual_loss(u, ux, uxx):
    return ((uxx + ux * u - u) ** 2).mean()


def node_loss(net, X):
    u, ux, uxx = net.derivatives(X, first=(0,), second=((0, 0),))
    return residual_loss(u, ux, uxx)


def grads_of(net, loss_fn):
    params = net.parameters()
    for p in params:
        p.zero_grad()
    L = loss_fn()
    L.backward()
    return float(L), [np.array(net.backend.to_numpy(p.grad)) for p in params]


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_weight_gradients_of_a_residual(activation):
    net, X = make_net(activation), inputs()
    value, g_node = grads_of(net, lambda: node_loss(net, X))

    def recorded_loss():
        u, ux, uxx = recorded(net, X, (0,), ((0, 0),))
        return residual_loss(u, ux, uxx)

    value_rec, g_rec = grads_of(net, recorded_loss)
    assert abs(value - value_rec) <= 1e-12 * abs(value)
    for a, b in zip(g_node, g_rec):
        assert rel(a, b) < 1e-10
    h = 1e-6
    for p, g in zip(net.parameters(), g_node):
        v = p.value
        for idx in list(np.ndindex(v.shape))[::3]:
            old = v[idx]
            v[idx] = old + h
            up = float(node_loss(net, X))
            v[idx] = old - h
            down = float(node_loss(net, X))
            v[idx] = old
            assert abs((up - down) / (2 * h) - g[idx]) <= 1e-6 * max(1.0, abs(g[idx])), (p.shape, idx)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_weight_gradients_when_outputs_are_unused_or_used_twice(backend):
    """Some outputs get no gradient (u, u_t), one gets two (u_x, in two terms), one only through
    the node's spec order (u_xt): the node's backward must see each output's gradient as the
    recorded path does."""
    if backend != "numpy":
        needs_the_kernels(backend)
    net, X = make_net("tanh", backend=backend), inputs()
    spec = ((0, 1), ((0, 0), (0, 1)))

    def loss(outputs):
        u, ux, ut, uxx, uxt = outputs
        return (ux * uxx).sum() + (ux ** 2).mean() + (uxt * 3.0).sum()

    _, a = grads_of(net, lambda: loss(net.derivatives(X, first=spec[0], second=spec[1])))
    _, b = grads_of(net, lambda: loss(recorded(net, X, *spec)))
    assert any(np.abs(x).max() > 0 for x in a)
    for x, y in zip(a, b):
        assert rel(x, y) < 1e-10


@pytest.mark.parametrize("spec", [((0, 0), ()), ((0, 1, 0), ((0, 0), (0, 1), (0, 0)))],
                         ids=["first-twice", "first-and-second-twice"])
def test_weight_gradients_when_an_input_is_asked_for_twice(backend, spec):
    """first=(0, 0) gives u_x twice; the gradients arriving at both copies add up (as they do on
    the recorded path, where both are one Tensor), on every backend, against the recorded path
    on numpy and float64 central differences of the loss."""
    net, X = make_net("tanh", backend=backend), inputs()
    ref = make_net("tanh")

    def loss(outputs):
        return sum((o * (1.0 + k)).sum() + (o ** 2).mean() for k, o in enumerate(outputs))

    value, got = grads_of(net, lambda: loss(net.derivatives(X, first=spec[0], second=spec[1])))
    value_rec, want = grads_of(ref, lambda: loss(recorded(ref, X, *spec)))
    assert abs(value - value_rec) <= 1e-12 * abs(value_rec)
    for x, y in zip(got, want):
        assert rel(x, y) < 1e-10
    if backend != "numpy":
        return
    h = 1e-6
    for p, g in zip(net.parameters(), got):
        v = p.value
        for idx in list(np.ndindex(v.shape))[::5]:
            old = v[idx]
            v[idx] = old + h
            up = float(loss(net.derivatives(X, first=spec[0], second=spec[1])))
            v[idx] = old - h
            down = float(loss(net.derivatives(X, first=spec[0], second=spec[1])))
            v[idx] = old
            assert abs((up - down) / (2 * h) - g[idx]) <= 1e-6 * max(1.0, abs(g[idx])), (p.shape, idx)


def test_weight_gradients_first_only_through_relu():
    net, X = make_net("leaky_relu"), inputs()

    def node():
        u, ux, ut = net.derivatives(X, first=(0, 1))
        return ((ux * ut + u) ** 2).sum()

    def rec():
        u, ux, ut = recorded(net, X, (0, 1), ())
        return ((ux * ut + u) ** 2).sum()

    _, a = grads_of(net, node)
    _, b = grads_of(net, rec)
    for x, y in zip(a, b):
        assert rel(x, y) < 1e-10


def test_standardized_inputs_are_differentiated_in_raw_units():
    net, X = make_net("tanh"), inputs()
    net.fit(X * [3.0, 0.5] + 1, np.zeros((6, 1)), epochs=1, standardize=True)
    assert net.standardizer is not None
    out = net.derivatives(X, first=(0, 1), second=SECOND)
    assert rel(out[1].numpy(), fd_first(net, X, 0)) < 1e-8
    for q, (i, j) in enumerate(SECOND):
        assert rel(out[3 + q].numpy(), fd_second(net, X, i, j), floor=1.0) < 1e-5


# ---- bad input -----------------------------------------------------------------------------

def test_an_input_that_does_not_exist():
    net, X = make_net("tanh"), inputs()
    with pytest.raises(ValueError, match="input index 2 does not exist"):
        net.derivatives(X, first=(2,))
    with pytest.raises(ValueError, match="input index 5 does not exist"):
        net.derivatives(X, second=((0, 5),))
    with pytest.raises(ValueError, match="unknown input 'y'"):
        net.derivatives(X, first=("y",), names=("x", "t"))
    be = get_backend("numpy")
    with pytest.raises(ValueError, match="numpy taylor_forward: first: input index 3 does not exist"):
        be.taylor_forward(X, [np.array(W) for W in net.weights], [np.array(b) for b in net.biases],
                          net.layer_activations, (3,))


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_inputs_without_rows_are_refused(backend):
    """An empty batch is refused before any kernel runs, as an array or as a Tensor."""
    net = make_net("tanh", backend=backend)
    with pytest.raises(ValueError, match="empty batch"):
        net.derivatives(np.empty((0, 2)), first=(0,))
    with pytest.raises(ValueError, match=r"X has no rows \(shape \(0, 2\)\)"):
        net.derivatives(bp.Tensor(np.empty((0, 2)), backend=backend), first=(0,))


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_second_derivatives_through_relu_are_refused(activation):
    net, X = make_net(activation), inputs()
    with pytest.raises(ValueError, match=f"second derivatives through {activation} are refused"):
        net.derivatives(X, first=(0,), second=((0, 0),))


def test_mismatched_incoming_gradients():
    net, X = make_net("tanh"), inputs()
    be = get_backend("numpy")
    Ws, bs = [np.array(W) for W in net.weights], [np.array(b) for b in net.biases]
    F, dF, d2F, saved = be.taylor_forward(X, Ws, bs, net.layer_activations, (0, 1), ((0, 1),))
    assert dF.shape == (2, 6, 1) and d2F.shape == (1, 6, 1)
    with pytest.raises(ValueError, match="numpy taylor_backward: G must have shape"):
        be.taylor_backward(saved, Ws, net.layer_activations, np.ones((5, 1)))
    with pytest.raises(ValueError, match=r"dG must have shape \(2, 6, 1\)"):
        be.taylor_backward(saved, Ws, net.layer_activations, np.ones((6, 1)), np.ones((1, 6, 1)))
    with pytest.raises(ValueError, match=r"d2G must have shape \(1, 6, 1\)"):
        be.taylor_backward(saved, Ws, net.layer_activations, np.ones((6, 1)), None,
                           np.ones((2, 6, 1)))
    with pytest.raises(TypeError, match="saved must be the TaylorSaved"):
        be.taylor_backward((1, 2), Ws, net.layer_activations, np.ones((6, 1)))
    dWs, dbs = be.taylor_backward(saved, Ws, net.layer_activations, np.ones((6, 1)))
    assert [d.shape for d in dWs] == [W.shape for W in Ws]


# ---- the cpu backend against the numpy reference -------------------------------------------

# (layers, first, second): widths 1, 3, 17, 20; first-only, mixed (0, 1), repeated and no streams
CPU_CASES = [
    ((1, 3, 1), (0,), ((0, 0),)),
    ((2, 17, 20, 1), (0, 1), ((0, 1),)),
    ((3, 20, 3, 17, 2), (2, 0), ((0, 0), (0, 2), (2, 2))),
    ((2, 7, 1), (1,), ()),
    ((2, 3, 1), (), ()),
]
TOL = {"float64": 1e-12, "float32": 1e-4}


def taylor_problem(layers, first, second, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, layers[0])).astype(dtype)
    Ws = [(rng.normal(size=(p, q)) / np.sqrt(p)).astype(dtype) for p, q in zip(layers, layers[1:])]
    bs = [rng.normal(size=q).astype(dtype) for q in layers[1:]]
    G = rng.normal(size=(n, layers[-1])).astype(dtype)
    dG = rng.normal(size=(len(first), n, layers[-1])).astype(dtype)
    d2G = rng.normal(size=(len(second), n, layers[-1])).astype(dtype)
    return X, Ws, bs, G, dG, d2G


def run_taylor(backend, acts, first, second, X, Ws, bs, G, dG, d2G):
    be = get_backend(backend)
    F, dF, d2F, saved = be.taylor_forward(X, Ws, bs, acts, first, second)
    dWs, dbs = be.taylor_backward(saved, Ws, acts, G, dG, d2G)
    return [F, dF, d2F] + list(dWs) + list(dbs)


def assert_matches_numpy(got, want, dtype):
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and a.dtype == b.dtype, k
        if b.size:
            assert rel(a, b) <= TOL[dtype], (k, rel(a, b))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n", [1, 7, 257])
@pytest.mark.parametrize("case", range(len(CPU_CASES)))
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "identity", "relu", "leaky_relu"])
def test_cpu_kernels_match_numpy(activation, case, n, dtype):
    layers, first, second = CPU_CASES[case]
    if activation in ("relu", "leaky_relu"):
        second = ()  # refused: first derivatives only
    acts = [activation] * (len(layers) - 2) + ["identity"]
    problem = taylor_problem(layers, first, second, n, dtype)
    want = run_taylor("numpy", acts, first, second, *problem)
    got = run_taylor("cpu", acts, first, second, *problem)
    assert_matches_numpy(got, want, dtype)
    # dG and d2G left out: zero
    be_np, be_cpu = get_backend("numpy"), get_backend("cpu")
    X, Ws, bs, G = problem[:4]
    outs = []
    for be in (be_np, be_cpu):
        saved = be.taylor_forward(X, Ws, bs, acts, first, second)[3]
        outs.append([*sum(be.taylor_backward(saved, Ws, acts, G), [])])
    assert_matches_numpy(outs[1], outs[0], dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cpu_kernels_are_bit_reproducible(dtype):
    """The same call twice, and the inputs at an odd offset inside a larger buffer: the same bits."""
    layers, first, second = (2, 20, 17, 20, 1), (0, 1), ((0, 0), (0, 1))
    acts = ["tanh", "sigmoid", "tanh", "identity"]
    problem = taylor_problem(layers, first, second, 257, dtype)

    def shifted(a):
        buf = np.empty(a.size + 3, a.dtype)
        view = buf[1:1 + a.size].reshape(a.shape)
        view[...] = a
        return view

    X, Ws, bs, G, dG, d2G = problem
    moved = (shifted(X), [shifted(W) for W in Ws], [shifted(b) for b in bs], shifted(G),
             shifted(dG), shifted(d2G))
    assert moved[0].ctypes.data % 16 != X.ctypes.data % 16 or moved[0].ctypes.data != X.ctypes.data
    runs = [run_taylor("cpu", acts, first, second, *p) for p in (problem, problem, moved)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cpu_saved_streams_at_any_alignment(monkeypatch, dtype):
    """The forward streams its saved blocks past the cache when a layer's buffer starts on a cache
    line (the buffer pool's always do) and copies them otherwise: the same bits either way."""
    layers, first, second = (2, 20, 20, 1), (0, 1), ((0, 0),)
    acts = ["tanh", "tanh", "identity"]
    problem = taylor_problem(layers, first, second, 700, dtype)
    aligned = run_taylor("cpu", acts, first, second, *problem)
    be = get_backend("cpu")

    def off_the_line(shapes, dtype):
        views = []
        for shape in shapes:
            buf = np.empty(int(np.prod(shape)) + 1, dtype)
            views.append(buf[1:].reshape(shape))
            assert views[-1].ctypes.data % 64 != 0
        return views
    monkeypatch.setattr(be, "reusable", off_the_line)
    shifted = run_taylor("cpu", acts, first, second, *problem)
    for a, b in zip(aligned, shifted):
        np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


# The cpu kernels run blocks of 128 samples (64 in float64), one sample per register lane, and
# sum the backward over at most 32 groups of blocks: 7001 rows are 55 blocks (110 in float64), so
# the groups hold one to four, and the last block is short (padded with zero samples). The
# products run in tiles of 5 output rows (widths 2, 3, 4, 6, 33, 40 leave a part tile) and the
# weight gradients in tiles of 4 x 5 rows, 16 streams at a time (21 streams: a second round).
# They save the hidden layers' streams before the activation and the last layer's after it: an
# output activation other than identity (recomputed in the backward), a hidden identity layer
# and a network of one layer take the other branches.
BLOCK_CASES = [
    ((2, 20, 20, 1), (0, 1), ((0, 0), (0, 1)), 7001, None),
    ((3, 40, 33, 2), (2, 0), ((0, 0), (2, 2)), 300, None),
    ((2, 5, 64, 1), (0,), ((0, 0),), 150, None),
    ((2, 6, 5, 3), (0, 1), ((0, 1), (1, 1)), 90, ("tanh", "identity", "sigmoid")),
    ((2, 4), (1, 0), ((0, 0), (1, 0)), 50, ("tanh",)),
    ((5, 12, 3), (0, 1, 2, 3, 4), tuple((i, j) for i in range(5) for j in range(i, 5)), 70, None),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", range(len(BLOCK_CASES)))
def test_cpu_kernels_match_numpy_over_many_blocks_and_wide_layers(case, dtype):
    layers, first, second, n, acts = BLOCK_CASES[case]
    acts = acts or ["tanh"] * (len(layers) - 2) + ["identity"]
    problem = taylor_problem(layers, first, second, n, dtype)
    want = run_taylor("numpy", acts, first, second, *problem)
    got = run_taylor("cpu", acts, first, second, *problem)
    assert_matches_numpy(got, want, dtype)


def assert_same_bits(run_a, run_b):
    for a, b in zip(run_a, run_b):
        np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cpu_workspaces_kept_between_calls_change_no_bits(dtype):
    """The kernels' workspaces outlive a call (scratch.hpp): a call after a larger one (wider
    layers, more streams, other numbers in every workspace) gives the bits of the first call,
    and so do calls from several Python threads at once (each takes its own workspaces)."""
    import threading

    needs_the_kernels("cpu")
    small = ((2, 20, 20, 1), (0, 1), ((0, 0),), 1000)
    large = ((3, 33, 40, 2), (2, 0, 1), ((0, 0), (0, 2), (1, 1)), 3001)

    def run(case, seed):
        layers, first, second, n = case
        acts = ["tanh"] * (len(layers) - 2) + ["identity"]
        return run_taylor("cpu", acts, first, second, *taylor_problem(layers, first, second, n, dtype, seed))

    first = run(small, 0)
    run(large, 1)
    assert_same_bits(first, run(small, 0))
    results = [None] * 4

    def worker(k):
        results[k] = [run(small if k % 2 == 0 else large, k % 2) for _ in range(3)]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, runs in enumerate(results):
        for r in runs:
            assert_same_bits(first if k % 2 == 0 else run(large, 1), r)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cpu_kernels_give_the_same_bits_on_any_thread_count(dtype):
    """Blocks and groups depend on the sizes only: 1, 2 and 3 threads give the same bits."""
    layers, first, second = (2, 20, 20, 1), (0, 1), ((0, 0), (0, 1))
    acts = ["tanh", "sigmoid", "identity"]
    problem = taylor_problem(layers, first, second, 7001, dtype)
    before = bp.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 3):
            bp.set_num_threads(threads)
            runs.append(run_taylor("cpu", acts, first, second, *problem))
    finally:
        bp.set_num_threads(before)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "identity"])
def test_cpu_derivatives_and_weight_gradients_match_numpy(activation, dtype):
    """The derivatives node and the weight gradients of a residual on cpu, against numpy."""
    X = inputs(n=7)
    nets = {b: make_net(activation, dtype, backend=b, layers=(2, 17, 20, 1)) for b in ("numpy", "cpu")}
    for a, b in zip(nets["numpy"].parameters(), nets["cpu"].parameters()):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))
    out = {b: net.derivatives(X, first=(0, 1), second=SECOND) for b, net in nets.items()}
    for a, b in zip(out["cpu"], out["numpy"]):
        assert rel(a.numpy(), b.numpy()) <= TOL[dtype]
    grads = {b: grads_of(net, lambda net=net: node_loss(net, X)) for b, net in nets.items()}
    assert abs(grads["cpu"][0] - grads["numpy"][0]) <= TOL[dtype] * abs(grads["numpy"][0])
    for a, b in zip(grads["cpu"][1], grads["numpy"][1]):
        assert rel(a, b) <= TOL[dtype]


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_cpu_first_derivatives_through_relu_match_numpy(activation):
    X = inputs(n=257)
    nets = {b: make_net(activation, backend=b, layers=(2, 20, 3, 1)) for b in ("numpy", "cpu")}
    out = {b: net.derivatives(X, first=(0, 1)) for b, net in nets.items()}
    for a, b in zip(out["cpu"], out["numpy"]):
        assert rel(a.numpy(), b.numpy()) <= 1e-12

    def loss(net):
        u, ux, ut = net.derivatives(X, first=(0, 1))
        return ((ux * ut + u) ** 2).sum()

    grads = {b: grads_of(net, lambda net=net: loss(net)) for b, net in nets.items()}
    for a, b in zip(grads["cpu"][1], grads["numpy"][1]):
        assert rel(a, b) <= 1e-12


def test_cpu_refuses_streams_that_are_not_one_buffer():
    """The native kernels multiply a layer's streams in one product: the saved arrays must be the
    views taylor_forward allocated."""
    from backprop.backends.base import TaylorSaved
    be = get_backend("cpu")
    X, Ws, bs, G, dG, d2G = taylor_problem((2, 3, 1), (0,), (), 5, "float64")
    saved = be.taylor_forward(X, Ws, bs, ["tanh", "identity"], (0,))[3]
    loose = TaylorSaved(saved.As, [d.copy() for d in saved.dAs], saved.d2As, saved.first,
                        saved.second)
    with pytest.raises(ValueError, match="not one buffer"):
        be.taylor_backward(loose, Ws, ["tanh", "identity"], G)


def test_cpu_native_taylor_kernels_check_memory():
    """backprop._cpu's own checks (what protects memory): indices, dtypes, overlaps."""
    from backprop import _cpu
    be = get_backend("cpu")
    X, Ws, bs, G, dG, d2G = taylor_problem((2, 3, 1), (0, 1), ((0, 1),), 5, "float64")
    acts = ["tanh", "identity"]
    s = be.taylor_forward(X, Ws, bs, acts, (0, 1), ((0, 1),))[3]
    saved = (list(s.As), list(s.dAs), list(s.d2As))
    with pytest.raises(ValueError, match="input index 2 out of range"):
        _cpu.taylor_forward(*saved, Ws, bs, acts, [0, 2], [(0, 1)])
    with pytest.raises(ValueError, match="stream positions out of range"):
        _cpu.taylor_forward(*saved, Ws, bs, acts, [0, 1], [(0, 2)])
    with pytest.raises(TypeError, match="bs.0. has dtype float32"):
        _cpu.taylor_forward(*saved, Ws, [b.astype(np.float32) for b in bs], acts, [0, 1], [(0, 1)])
    inside = s.As[1].reshape(-1)[:6].reshape(2, 3)
    with pytest.raises(ValueError, match="overlaps Ws.0."):
        _cpu.taylor_forward(*saved, [inside, Ws[1]], bs, acts, [0, 1], [(0, 1)])
    dW_in_saved = s.dAs[1].reshape(-1)[:6].reshape(2, 3)
    with pytest.raises(ValueError, match="dWs.0. overlaps streams of layer 1"):
        _cpu.taylor_backward(*saved, Ws, acts, [0, 1], [(0, 1)], G, None, None,
                             [dW_in_saved, np.empty((3, 1))], [np.empty(3), np.empty(1)])


# ---- the other backends against numpy ------------------------------------------------------

# float64: 1e-12 relative to the scale; float32: 1e-4 of the scale (numpy in float32 alongside)
BACKEND_RTOL = {"float64": 1e-12, "float32": 1e-4}


def needs_the_kernels(backend):
    if backend == "numpy":
        pytest.skip("numpy is the reference")
    if not (implements(backend, "taylor_forward") and implements(backend, "taylor_backward")):
        pytest.skip(f"{backend} does not implement the Taylor kernels (base.PARTIAL_KERNELS)")


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "identity"])
def test_backend_derivatives_match_numpy(backend, dtype, activation):
    needs_the_kernels(backend)
    X = inputs(n=37, d=3)
    first, second = (0, 2, 1), ((0, 2), (2, 0), (1, 1), (0, 0))
    layers = (3, 17, 33, 2)
    ref = make_net(activation, dtype, layers=layers).derivatives(X, first=first, second=second)
    out = make_net(activation, dtype, backend, layers=layers).derivatives(X, first=first,
                                                                          second=second)
    assert len(out) == len(ref) == 1 + len(first) + len(second)
    for k, (got, want) in enumerate(zip(out, ref)):
        assert got.numpy().dtype == np.dtype(dtype)
        assert rel(got.numpy(), want.numpy()) <= BACKEND_RTOL[dtype], k


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_backend_first_derivatives_through_relu_match_numpy(backend, dtype, activation):
    needs_the_kernels(backend)
    X = inputs(n=9)
    ref = make_net(activation, dtype).derivatives(X, first=(1, 0))
    out = make_net(activation, dtype, backend).derivatives(X, first=(1, 0))
    for got, want in zip(out, ref):
        assert rel(got.numpy(), want.numpy()) <= BACKEND_RTOL[dtype]


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_backend_weight_gradients_match_numpy(backend, dtype, activation):
    """The gradients of a residual loss through the derivatives node (taylor_backward), a mixed
    second derivative included."""
    needs_the_kernels(backend)
    X = inputs(n=11)

    def loss(net):
        u, ux, ut, uxt, uxx = net.derivatives(X, first=(0, 1), second=((0, 1), (0, 0)))
        return ((uxx + ux * u - ut * uxt - u) ** 2).mean()

    ref_net, net = make_net(activation, dtype), make_net(activation, dtype, backend)
    ref_value, ref_grads = grads_of(ref_net, lambda: loss(ref_net))
    value, grads = grads_of(net, lambda: loss(net))
    assert abs(value - ref_value) <= BACKEND_RTOL[dtype] * abs(ref_value)
    for got, want in zip(grads, ref_grads):
        assert rel(got, want) <= BACKEND_RTOL[dtype]


# ---- the README's example ------------------------------------------------------------------

def test_readme_poisson_example():
    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    text = readme.read_text()
    section = text.split("## Physics-informed networks (derivatives with respect to the inputs)")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace("adam_steps = 3000", "adam_steps = 300").replace(
        "max_iter=300", "max_iter=30")
    assert "adam_steps = 300\n" in code and "max_iter=30)" in code
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert np.isfinite(scope["result"].loss)
    assert scope["result"].loss < scope["adam_loss"]


# ---- PyTorch double backward as an oracle (when torch is installed) -------------------------

@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_against_pytorch_double_backward(backend, activation):
    """u, u_x, u_t, u_xx, u_xt and the weight gradients of a Burgers-like residual loss, against
    torch.autograd.grad(..., create_graph=True) on the same weights (float64)."""
    torch = pytest.importorskip("torch")
    if backend not in bp.available_backends():
        pytest.skip(f"backend {backend!r} is not built here")
    X = inputs(n=33)
    net = make_net(activation, backend=backend, layers=(2, 9, 7, 1))
    params = [torch.tensor(np.asarray(net.backend.to_numpy(p.value)), requires_grad=True)
              for p in net.parameters()]
    act = torch.tanh if activation == "tanh" else torch.sigmoid

    def torch_net(x):
        A = x
        for l in range(len(params) // 2):
            A = A @ params[2 * l] + params[2 * l + 1].reshape(-1)
            if l < len(params) // 2 - 1:
                A = act(A)
        return A

    x = torch.tensor(X, requires_grad=True)
    u = torch_net(x)
    du = torch.autograd.grad(u.sum(), x, create_graph=True)[0]
    u_x, u_t = du[:, :1], du[:, 1:]
    d2 = torch.autograd.grad(u_x.sum(), x, create_graph=True)[0]
    u_xx, u_xt = d2[:, :1], d2[:, 1:]
    loss = ((u_t + u * u_x - 0.3 * u_xx + u_xt) ** 2).mean()
    loss.backward()
    want = [t.detach().numpy() for t in (u, u_x, u_t, u_xx, u_xt)]

    got = net.derivatives(X, first=("x", "t"), second=("xx", "xt"), names=("x", "t"))
    for k, (a, b) in enumerate(zip(got, want)):
        assert rel(a.numpy(), b) <= 1e-12, k

    def residual():
        u, u_x, u_t, u_xx, u_xt = net.derivatives(X, first=("x", "t"), second=("xx", "xt"), names=("x", "t"))
        return ((u_t + u * u_x - 0.3 * u_xx + u_xt) ** 2).mean()

    value, grads = grads_of(net, residual)
    assert abs(value - loss.item()) <= 1e-12 * abs(loss.item())
    for g, p in zip(grads, params):
        assert rel(g.reshape(p.shape), p.grad.numpy()) <= 1e-10


def test_the_node_gives_the_bits_of_the_checked_kernels(backend, dtype):
    """The derivatives node calls the backend's unchecked Taylor kernels (tensor/kernels.py): its
    outputs and weight gradients are those of the public, checked taylor_forward/backward, bit for
    bit, with a gradient arriving at every kind of output."""
    if not (implements(backend, "taylor_forward") and implements(backend, "taylor_backward")):
        pytest.skip(f"{backend} does not implement the Taylor kernels (base.PARTIAL_KERNELS)")
    net = make_net("tanh", dtype, backend, layers=(2, 9, 5, 1))
    be = net.backend
    rng = np.random.default_rng(7)
    X = inputs(n=23)
    a, b, c, e = (rng.normal(size=(23, 1)) for _ in range(4))
    u, ux, ut, uxx = net.derivatives(X, first=(0, 1), second=((0, 0),))
    params = net.parameters()
    for p in params:
        p.zero_grad()
    ((u * a + ux * b + ut * c + uxx * e).sum()).backward()
    node_grads = [be.to_numpy(p.grad) for p in params]

    Ws = [p.value for p in params[0::2]]
    bs = [p.value for p in params[1::2]]
    acts = net.layer_activations
    F, dF, d2F, saved = be.taylor_forward(be.asarray(X, dtype), Ws, bs, acts, (0, 1), ((0, 0),))
    for got, want in zip((u, ux, ut, uxx), (F, dF[0], dF[1], d2F[0])):
        assert np.array_equal(got.numpy(), be.to_numpy(want))
    G = be.asarray(a, dtype)
    dG = be.asarray(np.stack([b, c]), dtype)
    d2G = be.asarray(e[None], dtype)
    dWs, dbs = be.taylor_backward(saved, Ws, acts, G, dG, d2G)
    kernel_grads = [be.to_numpy(g) for pair in zip(dWs, dbs) for g in pair]
    assert len(node_grads) == len(kernel_grads)
    for got, want in zip(node_grads, kernel_grads):
        assert np.array_equal(got, want)
