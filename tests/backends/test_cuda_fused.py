"""The cuda backend's fused training step (CudaBackend.make_trainer: one CUDA graph replay per
step) under emulation: the same numbers as the kernel-by-kernel Trainer (fused=False), the
non-finite-loss contract, and the launches one step costs.

The two paths launch the same kernels with the same arguments on the same data, so their
numbers agree exactly, not just to a tolerance; the tests ask for equality.
"""

import shutil

import numpy as np
import pytest

import backprop as bp
from backprop.backends.cuda import CudaBackend, GraphTrainer
from backprop.train import NonFiniteLossError, Trainer

from ..conftest import OPTIMIZERS
from ..cuda_emu import emulator, fakecupy

pytestmark = pytest.mark.skipif(shutil.which(emulator.CXX) is None,
                                reason=f"no host C++ compiler ({emulator.CXX}) to emulate the cuda kernels")

LAYERS = [2, 6, 5, 1]


@pytest.fixture(scope="module")
def emu():
    return CudaBackend(cupy=fakecupy)


def data(rng, n=23):
    X = rng.uniform(-1, 1, size=(n, 2))
    return X, np.sin(2 * X[:, :1]) + X[:, 1:] ** 2


def fit_both(emu, X, Y, dtype, **kwargs):
    """fit with fused=False and fused=True from the same start: (history, net) of each."""
    out = []
    for fused in (False, True):
        net = bp.MLP(LAYERS, backend=emu, dtype=dtype, seed=0)
        kw = dict(kwargs)
        kw["optimizer"] = OPTIMIZERS[kw["optimizer"]]()
        history = net.fit(X, Y, seed=1, fused=fused, **kw)
        out.append((history, net))
    return out


def assert_same(a, b):
    (ha, na), (hb, nb) = a, b
    np.testing.assert_array_equal(hb.loss, ha.loss)
    for x, y in zip(na.weights + na.biases, nb.weights + nb.biases):
        np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_fit_full_batch_with_schedule_equals_kernel_path(emu, rng, dtype, optimizer):
    X, Y = data(rng)
    schedule = bp.optim.piecewise_constant([2, 4], [0.05, 0.02, 0.01]) if optimizer != "adam" \
        else bp.optim.exponential_decay(1e-2, 0.7)
    plain, fused = fit_both(emu, X, Y, dtype, optimizer=optimizer, epochs=6, loss="sse",
                            l1=1e-3, lr_schedule=schedule)
    assert_same(plain, fused)
    assert len(set(fused[0].lr)) > 1
    assert isinstance(fused[1].backend, CudaBackend)


@pytest.mark.parametrize("optimizer", [o for o in OPTIMIZERS if o != "gd"])
def test_fit_minibatches_partial_last_batch_equals_kernel_path(emu, rng, dtype, optimizer):
    X, Y = data(rng)  # 23 rows in batches of 10: 10, 10, 3
    plain, fused = fit_both(emu, X, Y, dtype, optimizer=optimizer, epochs=4, batch_size=10,
                            loss="mse", l1=1e-3, l2=1e-2,
                            lr_schedule=lambda e: 0.02 / (1 + e) if optimizer != "adam" else 1e-2 * 0.5 ** e)
    assert_same(plain, fused)


def test_fit_cross_entropy_relu_validation_early_stopping(emu, rng):
    X = rng.normal(size=(30, 2))
    labels = (X[:, 0] * X[:, 1] > 0).astype(int)
    runs = []
    for fused in (False, True):
        net = bp.MLP([2, 8, 2], activation="relu", backend=emu, dtype="float64", seed=0)
        history = net.fit(X, labels, loss="cross_entropy", optimizer="adam", lr=5e-2, epochs=8,
                          batch_size=8, validation_data=(X[:10], labels[:10]), early_stopping=3,
                          standardize=True, fused=fused, seed=2)
        runs.append((history, net))
    assert_same(*runs)
    assert runs[1][0].val_loss == runs[0][0].val_loss
    assert runs[1][0].loss[-1] < runs[1][0].loss[0]


def test_trainer_steps_equal_kernel_path_with_changing_lr(emu, rng, dtype):
    X, Y = data(rng, n=12)
    for name in ("sgd", "adam"):
        curves, nets = [], []
        for fused in (False, True):
            net = bp.MLP(LAYERS, backend=emu, dtype=dtype, seed=0)
            tr = Trainer(net, "mse", OPTIMIZERS[name](), l2=1e-2, fused=fused)
            Xb, Yb = net.input_array(X), net.target_array(Y, 12, "mse")
            curve = []
            for i in range(5):
                tr.optimizer.lr = [1e-2, 1e-2, 5e-3, 2e-2, 2e-2][i]
                value = tr.step(Xb, Yb)
                assert type(value) is float
                curve.append(value)
            curves.append(curve)
            nets.append(net)
            assert tr.state.step == 5
        assert curves[1] == curves[0]
        for a, b in zip(nets[0].weights, nets[1].weights):
            np.testing.assert_array_equal(b, a)


def nan_batch_data(rng, bad_row):
    X, Y = data(rng, n=23)
    X[bad_row, 0] = np.nan
    return X, Y


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_non_finite_loss_mid_epoch(emu, rng, optimizer):
    """Batch 1 of 3 has a NaN: that batch and the rest of the epoch update nothing, the losses
    end with the NaN, and the Trainer raises; parameters and optimizer state are those after
    batch 0, as on the kernel path; the trainer then goes on normally."""
    X, Y = nan_batch_data(rng, bad_row=14)
    results = []
    for fused in (False, True):
        net = bp.MLP(LAYERS, backend=emu, dtype="float64", seed=0)
        tr = Trainer(net, "mse", OPTIMIZERS[optimizer](), fused=fused)
        Xd, Yd = emu.asarray(X, np.float64), emu.asarray(Y, np.float64)  # no finiteness check
        with pytest.raises(NonFiniteLossError):
            tr.epoch(Xd, Yd, 10)
        assert tr.state.step == 1
        state = [emu.to_numpy(s).copy() for slot in tr.state.slots for s in slot.values()]
        weights = net.weights + net.biases
        good = emu.asarray(X[:10], np.float64), emu.asarray(Y[:10], np.float64)
        after = tr.step(*good)
        results.append((weights, state, after, net.weights))
    (w0, s0, a0, n0), (w1, s1, a1, n1) = results
    for a, b in zip(w0 + s0 + n0, w1 + s1 + n1):
        np.testing.assert_array_equal(b, a)
    assert a1 == a0 and np.isfinite(a1)


def test_native_epoch_losses_end_at_the_non_finite_batch(emu, rng):
    X, Y = nan_batch_data(rng, bad_row=14)
    nets = [bp.MLP(LAYERS, backend=emu, dtype="float64", seed=0) for _ in range(2)]
    trainers = []
    for n in nets:
        opt = bp.optim.Adam(lr=1e-2)
        state = opt.state(emu, n.params)
        state.step = 3
        trainers.append(emu.make_trainer(n, "mse", opt, state))
    Xd, Yd = emu.asarray(X, np.float64), emu.asarray(Y, np.float64)
    losses = trainers[0].epoch(Xd, Yd, 10, None, 1e-2, 3)
    assert losses.dtype == np.float64 and len(losses) == 2
    assert np.isfinite(losses[0]) and np.isnan(losses[1])
    assert trainers[0].t == 4  # as the cpu trainer: t counts the updates made
    value = trainers[1].step(Xd[:10], Yd[:10], 1e-2, 3)  # the one update the epoch made
    assert value == losses[0] and trainers[1].t == 4
    for a, b in zip(nets[0].params, nets[1].params):
        np.testing.assert_array_equal(emu.to_numpy(a), emu.to_numpy(b))


def test_non_finite_step_does_not_update(emu, rng):
    X, Y = nan_batch_data(rng, bad_row=0)
    net = bp.MLP(LAYERS, backend=emu, dtype="float32", seed=0)
    tr = Trainer(net, "sse", "adam", lr=1e-2)
    assert tr.fused
    before = net.weights + net.biases
    with pytest.raises(NonFiniteLossError):
        tr.step(emu.asarray(X, np.float32), emu.asarray(Y, np.float32))
    for a, b in zip(before, net.weights + net.biases):
        np.testing.assert_array_equal(b, a)
    assert tr.state.step == 0 and tr.native().t == 0
    assert np.isfinite(tr.step(emu.asarray(X[1:], np.float32), emu.asarray(Y[1:], np.float32)))


def test_fit_divergence_keeps_finite_parameters(emu, rng):
    """An lr far too large: fit raises NonFiniteLossError naming the epoch, with the model at
    finite parameters, the same as the kernel path's."""
    X, Y = data(rng)
    results = []
    for fused in (False, True):
        net = bp.MLP(LAYERS, backend=emu, dtype="float32", seed=0)
        with pytest.raises(NonFiniteLossError, match="epoch") as info:
            net.fit(X, 1e6 * Y, loss="sse", optimizer="sgd", lr=10.0, epochs=50, batch_size=5,
                    seed=0, fused=fused)
        params = net.weights + net.biases
        assert all(np.isfinite(p).all() for p in params)
        results.append((str(info.value), params))
    assert results[1][0] == results[0][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(b, a)


def graph_kernels(n_layers, penalty, out_act):
    """Nodes in one captured step: batch in, forward, loss (a counter reset and the kernel),
    output derivative, backward (two products per layer but the first), penalties (a counter
    reset and the kernel each), step end, updates (W and b per layer)."""
    return (1 + n_layers + 2 + (out_act != "identity") + 2 * n_layers - 1
            + (2 * n_layers if penalty else 0) + 1 + 2 * n_layers)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_launches_per_step(emu, rng, optimizer):
    X, Y = data(rng, n=16)
    net = bp.MLP(LAYERS, backend=emu, dtype="float32", seed=0, output_activation="sigmoid")
    tr = Trainer(net, "bce", optimizer, lr=1e-2, l2=1e-3)
    Xb, Yb = net.input_array(X), net.target_array((Y > 0).astype(float), 16, "bce")
    tr.step(Xb, Yb)  # captures the graph
    graphs = tr.native()._graphs
    assert [g.graph.kernels for g in graphs.values()] == [graph_kernels(3, True, "sigmoid")]
    before, replays, copies = emu.launches, emu.graph_launches, emu.copies
    for _ in range(4):
        tr.step(Xb, Yb)
    per_step = (emu.launches - before) / 4
    # one replay and the loss read back; Adam's bias corrections change every step: one upload
    assert per_step == (2 if optimizer == "sgd" else 3)
    assert emu.graph_launches - replays == 4
    assert emu.copies - copies == (4 if optimizer == "sgd" else 8)
    # an epoch: one upload, one replay per batch, one read back
    tr.epoch(Xb, Yb, 5)  # batches 5, 5, 5, 1: two more graphs
    before = emu.launches
    tr.epoch(Xb, Yb, 5)
    assert emu.launches - before == 4 + 2


def test_make_trainer_checks_its_arguments(emu):
    net = bp.MLP(LAYERS, backend=emu, dtype="float64", seed=0)
    opt = bp.optim.SGD(lr=0.1)
    state = opt.state(emu, net.params)
    with pytest.raises(ValueError, match="loss"):
        emu.make_trainer(net, "hinge", opt, state)
    with pytest.raises(ValueError, match="state"):
        emu.make_trainer(net, "mse", bp.optim.Adam(), state)
    with pytest.raises(ValueError, match="backend"):
        emu.make_trainer(bp.MLP(LAYERS, seed=0), "mse", opt, state)
    tr = emu.make_trainer(net, "mse", opt, state)
    assert isinstance(tr, GraphTrainer)
    X = emu.zeros((4, 2), np.float64)
    with pytest.raises(ValueError, match="Y"):
        tr.step(X, emu.zeros((4, 2), np.float64), 0.1, 0)
    with pytest.raises(TypeError, match="float32"):
        tr.step(emu.zeros((4, 2), np.float32), emu.zeros((4, 1), np.float32), 0.1, 0)
    with pytest.raises(ValueError, match="batch_size"):
        tr.epoch(X, emu.zeros((4, 1), np.float64), 0, None, 0.1, 0)


def test_the_graph_holds_the_workspace_it_captured(emu, rng):
    """The model may evict its workspace for a batch size; the graph keeps its own alive and
    still gives the kernel path's numbers."""
    X, Y = data(rng, n=12)
    results = []
    for fused in (False, True):
        net = bp.MLP(LAYERS, backend=emu, dtype="float64", seed=0)
        tr = Trainer(net, "mse", "sgd", lr=1e-2, fused=fused)
        Xb, Yb = net.input_array(X), net.target_array(Y, 12, "mse")
        values = [tr.step(Xb, Yb)]
        if fused:
            held = tr.native()._graphs[(12, 0)].workspace
        for n in (1, 2, 3, 4, 5):  # the model keeps 4 workspaces: n = 12 is evicted
            net.forward(Xb[:n])
        assert 12 not in net._workspaces
        if fused:
            assert tr.native()._graphs[(12, 0)].workspace is held
        values.append(tr.step(Xb, Yb))
        results.append((values, net.weights))
    assert results[1][0] == results[0][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(b, a)


def test_epoch_with_order_gathers_rows(emu, rng):
    """``order`` (as the cpu trainer's): the batches are rows order[s : s + batch]."""
    X, Y = data(rng, n=11)
    order = rng.permutation(11).astype(np.int64)
    losses = []
    nets = []
    for gathered in (False, True):
        net = bp.MLP(LAYERS, backend=emu, dtype="float64", seed=0)
        opt = bp.optim.SGD(lr=0.05)
        tr = emu.make_trainer(net, "mse", opt, opt.state(emu, net.params))
        if gathered:
            out = tr.epoch(net.input_array(X), net.target_array(Y, 11, "mse"), 4, order, 0.05, 0)
        else:
            out = tr.epoch(net.input_array(X[order]), net.target_array(Y[order], 11, "mse"), 4, None, 0.05, 0)
        losses.append(out)
        nets.append(net)
    np.testing.assert_array_equal(losses[1], losses[0])
    np.testing.assert_array_equal(nets[1].weights[0], nets[0].weights[0])


def test_graphs_kept_per_trainer_are_bounded(emu, rng):
    X, Y = data(rng, n=12)
    net = bp.MLP(LAYERS, backend=emu, dtype="float64", seed=0)
    tr = Trainer(net, "mse", "sgd", lr=1e-2)
    Xb, Yb = net.input_array(X), net.target_array(Y, 12, "mse")
    for n in range(1, 12):
        tr.step(Xb[:n], Yb[:n])
    assert len(tr.native()._graphs) == 8
    assert np.isfinite(tr.step(Xb[:1], Yb[:1]))  # evicted, captured again
