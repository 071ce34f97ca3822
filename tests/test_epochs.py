"""fit's epochs: rows visited through Trainer.epoch(order=...), the step count after skipped
steps, and finite parameters whatever happens (divergence, overflow in an update)."""

import numpy as np
import pytest

import backprop as bp
from backprop.backends import why_unavailable
from backprop.train import NonFiniteLossError, Trainer


def regression(rng, n=50):
    X = rng.uniform(-1, 1, size=(n, 2))
    return X, np.sin(2 * X[:, :1]) + X[:, 1:] ** 2


def paths(backend):
    """fused=None (the backend's fused path when it has one) and fused=False."""
    return [None, False] if backend != "numpy" else [None]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fit_with_shuffle_equals_a_loop_over_permuted_copies(backend, dtype, optimizer, rng):
    """The reference is the loop fit ran before: X[perm], Y[perm] copied every epoch."""
    X, Y = regression(rng)
    for fused in paths(backend):
        net = bp.MLP([2, 8, 8, 1], backend=backend, dtype=dtype, seed=0)
        history = net.fit(X, Y, optimizer=optimizer, lr=1e-2, epochs=6, batch_size=16, seed=3,
                          fused=fused)
        ref = bp.MLP([2, 8, 8, 1], backend=backend, dtype=dtype, seed=0)
        trainer = Trainer(ref, "mse", optimizer, lr=1e-2, seed=3, fused=fused)
        Xd, Yd = ref.input_array(X), ref.target_array(Y, 50, "mse")
        order_rng = np.random.default_rng(3)
        losses = []
        for _ in range(6):
            perm = order_rng.permutation(50)
            values, sizes = trainer.epoch(Xd[perm], Yd[perm], 16)
            losses.append(float(np.dot(values, sizes) / sum(sizes)))
        if backend == "cpu" and optimizer == "adam":
            # the cpu backend's Adam update rounds differently with the alignment of its
            # buffers (1 ulp between two identical runs in one process): close, not equal
            tol = {"float32": 1e-5, "float64": 1e-12}[dtype]
            check = lambda a, b: np.testing.assert_allclose(a, b, rtol=tol, atol=tol)  # noqa: E731
        else:
            check = np.testing.assert_array_equal
        for got, want in zip(net.weights + net.biases, ref.weights + ref.biases):
            check(got, want)
        check(history.loss, losses)
        assert trainer.state.step == 6 * 4


def test_fit_passes_an_order_instead_of_copying_the_data(backend, rng, monkeypatch):
    X, Y = regression(rng)
    seen = []
    real_epoch = Trainer.epoch

    def spy(self, X, Y, batch_size, order=None):
        seen.append((X, Y, None if order is None else np.array(order)))
        return real_epoch(self, X, Y, batch_size, order=order)
    monkeypatch.setattr(Trainer, "epoch", spy)
    for fused in paths(backend):
        seen.clear()
        bp.MLP([2, 4, 1], backend=backend, seed=0).fit(X, Y, optimizer="sgd", epochs=3,
                                                       batch_size=8, seed=0, fused=fused)
        assert len(seen) == 3
        assert all(x is seen[0][0] and y is seen[0][1] for x, y, _ in seen)  # the same arrays
        for _, _, order in seen:
            assert order is not None and sorted(order.tolist()) == list(range(50))
        assert not np.array_equal(seen[0][2], seen[1][2])
        seen.clear()  # no shuffling, or one batch: no order at all
        bp.MLP([2, 4, 1], backend=backend, seed=0).fit(X, Y, optimizer="sgd", epochs=2,
                                                       batch_size=8, shuffle=False, fused=fused)
        bp.MLP([2, 4, 1], backend=backend, seed=0).fit(X, Y, epochs=2, fused=fused)
        assert [order for _, _, order in seen] == [None] * 4


def test_trainer_epoch_order_gathers_the_rows(backend, rng):
    X, Y = regression(rng, n=11)
    order = np.array([3, 1, 4, 10, 5, 9, 2, 6, 0, 8, 7])
    results = []
    for fused in paths(backend):
        for gathered in (True, False):
            net = bp.MLP([2, 5, 1], backend=backend, dtype="float64", seed=0)
            trainer = Trainer(net, "sse", "sgd", lr=0.05, fused=fused)
            Xd, Yd = net.input_array(X), net.target_array(Y, 11, "sse")
            if gathered:
                values, sizes = trainer.epoch(Xd, Yd, 4, order=order)
            else:
                values, sizes = trainer.epoch(Xd[order], Yd[order], 4)
            assert sizes == [4, 4, 3]
            results.append((values, net.weights))
    for values, weights in results[1:]:
        np.testing.assert_array_equal(values, results[0][0])
        for got, want in zip(weights, results[0][1]):
            np.testing.assert_array_equal(got, want)


def test_trainer_epoch_checks_the_order(backend, rng):
    X, Y = regression(rng, n=6)
    for fused in paths(backend):
        net = bp.MLP([2, 3, 1], backend=backend, seed=0)
        trainer = Trainer(net, "mse", "sgd", fused=fused)
        Xd, Yd = net.input_array(X), net.target_array(Y, 6, "mse")
        before = net.weights
        with pytest.raises(ValueError, match=r"order must have shape \(6,\)"):
            trainer.epoch(Xd, Yd, 2, order=np.arange(5))
        with pytest.raises(ValueError, match=r"outside \[0, 5\]"):
            trainer.epoch(Xd, Yd, 2, order=np.array([0, 1, 2, 3, 4, 6]))
        with pytest.raises(ValueError, match=r"outside \[0, 5\]"):
            trainer.epoch(Xd, Yd, 2, order=np.array([0, 1, 2, 3, 4, -1]))
        with pytest.raises(TypeError, match="integer row indices"):
            trainer.epoch(Xd, Yd, 2, order=np.arange(6.0))
        with pytest.raises(ValueError, match="batch_size"):
            trainer.epoch(Xd, Yd, 0)
        for got, want in zip(net.weights, before):
            np.testing.assert_array_equal(got, want)
        assert trainer.state.step == 0


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_step_count_after_skipped_steps_is_the_same_on_every_path(backend, optimizer, rng):
    """A batch with a non-finite loss is not applied and not counted, on the fused path (which
    stops the epoch there) as on the kernel path; Adam's next step uses the right t."""
    X, Y = regression(rng, n=12)
    results = []
    for fused in paths(backend) + ([False] if backend == "numpy" else []):
        net = bp.MLP([2, 4, 1], backend=backend, dtype="float64", seed=0)
        trainer = Trainer(net, "mse", optimizer, lr=1e-2, fused=fused)
        Xd = net.input_array(X)
        Y_bad = Y.copy()
        Y_bad[9, 0] = np.nan  # in the third batch of 4
        Yd, Yd_bad = net.target_array(Y, 12, "mse"), net.backend.asarray(Y_bad, net.dtype)
        trainer.epoch(Xd, Yd, 4)
        with pytest.raises(NonFiniteLossError):
            trainer.step(Xd, Yd_bad)  # one batch, skipped
        assert trainer.state.step == 3
        with pytest.raises(NonFiniteLossError):
            trainer.epoch(Xd, Yd_bad, 4)  # two batches applied, the third skipped
        assert trainer.state.step == 5
        trainer.epoch(Xd, Yd, 4)
        assert trainer.state.step == 8
        results.append(net.weights + net.biases)
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_an_update_that_overflows_restores_finite_parameters(backend, rng):
    """l2 = 1e300: the loss stays finite but the first update makes the weights infinite."""
    X, Y = regression(rng)
    for fused in paths(backend):
        net = bp.MLP([2, 8, 1], backend=backend, seed=0)
        start = net.weights + net.biases
        # (the cuda kernels sum the penalty in float32: there the loss itself overflows)
        message = "epoch 0" + (".*parameters NaN or infinite" if backend != "cuda" else "")
        with pytest.raises(NonFiniteLossError, match=message):
            net.fit(X, Y, l2=1e300, epochs=3, optimizer="sgd", fused=fused)
        for got, want in zip(net.weights + net.biases, start):
            np.testing.assert_array_equal(got, want)
        assert np.isfinite(net.predict(X)).all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_after_some_epochs_keeps_finite_parameters(backend, rng):
    X, Y = regression(rng)
    for fused in paths(backend):
        net = bp.MLP([2, 16, 1], backend=backend, seed=0)
        with pytest.raises(NonFiniteLossError, match="epoch"):
            net.fit(X, 1e3 * Y, loss="sse", optimizer="sgd", lr=10.0, epochs=1000, fused=fused)
        assert all(np.isfinite(p).all() for p in net.weights + net.biases)
        assert np.isfinite(net.predict(X)).all()


def test_fit_refuses_to_start_from_non_finite_parameters(rng):
    X, Y = regression(rng)
    net = bp.MLP([2, 4, 1], seed=0)
    net.W[0][0, 0] = np.inf  # only possible by writing the buffers directly
    with pytest.raises(ValueError, match="parameters contain NaN or Inf"):
        net.fit(X, Y, epochs=1)


def test_float64_data_beyond_float32_is_rejected(backend, rng):
    X, Y = regression(rng, n=6)
    net = bp.MLP([2, 3, 1], backend=backend, seed=0)
    big = X.copy()
    big[4, 1] = 1e39
    before = net.weights
    for call in (lambda: net.predict(big), lambda: net.loss_and_grad(big, Y),
                 lambda: net.fit(big, Y, epochs=1),
                 lambda: net.fit(X, Y, epochs=1, validation_data=(big, Y))):
        with pytest.raises(ValueError, match=r"X has values beyond the range of the model's dtype "
                                             r"float32 .*1e\+39 at index \[4, 1\]"):
            call()
    with pytest.raises(ValueError, match="Y has values beyond the range"):
        net.loss_and_grad(X, -1e39 * np.ones((6, 1)))
    with pytest.raises(ValueError, match=r"weights\[0\] has values beyond the range"):
        net.set_params([1e39 * np.ones((2, 3)), np.ones((3, 1))], net.biases)
    for got, want in zip(net.weights, before):
        np.testing.assert_array_equal(got, want)
    # standardized first, the same data fits; a float64 model takes it as it is
    net.fit(big, Y, epochs=1, standardize=True)
    assert np.isfinite(net.predict(big)).all()
    assert np.isfinite(bp.MLP([2, 3, 1], backend=backend, dtype="float64", seed=0).predict(big)).all()


def test_a_fused_epoch_stopped_by_ctrl_c_counts_the_updates_it_applied():
    """The native epoch raises KeyboardInterrupt between batches with the updates it applied;
    the optimizer's step count (Adam's bias correction) follows them."""
    net = bp.MLP([2, 3, 1], backend="numpy", seed=0)
    trainer = bp.Trainer(net, "mse", "adam", fused=False)
    trainer.state.step = 7

    class Stopped:
        def epoch(self, *args):
            exc = KeyboardInterrupt()
            exc.updates, exc.losses = 3, [1.0, 1.0, 1.0]
            raise exc

    trainer.fused, trainer._native = True, Stopped()
    with pytest.raises(KeyboardInterrupt):
        trainer.epoch(np.zeros((8, 2)), np.zeros((8, 1)), 2)
    assert trainer.state.step == 10
