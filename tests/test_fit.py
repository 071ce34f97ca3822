"""Training: optimizers, minibatches, schedules, regularization, dropout, early stopping, NaN."""

import numpy as np
import pytest

import backprop as bp
from backprop.gradcheck import numeric_gradient


def regression(rng, n=64):
    X = rng.uniform(-1, 1, size=(n, 2))
    Y = np.sin(2 * X[:, :1]) + X[:, 1:] ** 2
    return X, Y


@pytest.mark.parametrize("optimizer", ["gd", "sgd", "adam", bp.optim.SGD(lr=0.05, momentum=0.9),
                                       bp.optim.SGD(lr=0.05, momentum=0.9, nesterov=True)])
def test_fit_reduces_the_loss(backend, optimizer, rng):
    X, Y = regression(rng)
    net = bp.MLP([2, 16, 1], backend=backend, seed=0)
    history = net.fit(X, Y, loss="mse", optimizer=optimizer, lr=0.05, epochs=60,
                      batch_size=None if optimizer == "gd" else 16)
    assert history.epochs == 60 and len(history.lr) == 60
    assert history.loss[-1] < 0.5 * history.loss[0]


def test_loss_curves_agree_across_backends(backend, dtype, rng):
    X, Y = regression(rng)
    curves = []
    for name in ("numpy", backend):
        net = bp.MLP([2, 8, 8, 1], backend=name, dtype=dtype, seed=0)
        curves.append(net.fit(X, Y, loss="mse", optimizer="adam", lr=1e-2, epochs=300,
                              batch_size=16, seed=1).loss)
    np.testing.assert_allclose(curves[1], curves[0], rtol=2e-3 if dtype == "float32" else 1e-9)


def test_sse_epoch_loss_is_the_sum_over_batches(rng):
    X, Y = regression(rng, n=40)
    net = bp.MLP([2, 4, 1], dtype="float64", seed=0)
    before = net.loss_and_grad(X, Y, "sse")[0]
    history = net.fit(X, Y, loss="sse", optimizer=bp.optim.SGD(lr=0.0), epochs=1, batch_size=7)
    np.testing.assert_allclose(history.loss[0], before, rtol=1e-12)


def test_optimizer_names_objects_and_schedule(rng):
    X, Y = regression(rng)
    net = bp.MLP([2, 4, 1], seed=0)
    opt = bp.optim.Adam(lr=0.01)
    h = net.fit(X, Y, optimizer=opt, epochs=3)
    assert h.lr == [0.01] * 3  # an object keeps its own lr
    schedule = bp.optim.piecewise_constant([2, 4], [1e-2, 1e-3, 1e-4])
    h = net.fit(X, Y, optimizer="sgd", epochs=6, lr_schedule=schedule)
    assert h.lr == [1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4]
    decay = bp.optim.exponential_decay(0.1, 0.5)
    assert decay(2) == pytest.approx(0.025)
    cosine = bp.optim.cosine_decay(0.1, 10)
    assert cosine(0) == pytest.approx(0.1) and cosine(10) == pytest.approx(0.0)


def test_gd_is_full_batch(rng):
    X, Y = regression(rng)
    net = bp.MLP([2, 4, 1], seed=0)
    with pytest.raises(ValueError, match="full-batch"):
        net.fit(X, Y, optimizer="gd", batch_size=8)


def test_penalty_value_and_gradient(backend, rng):
    X, Y = regression(rng, n=10)
    net = bp.MLP([2, 5, 1], backend=backend, dtype="float64", seed=0)
    trainer = bp.Trainer(net, "mse", bp.optim.SGD(lr=0.0), l1=0.01, l2=0.1)
    W = net.weights
    Xb, Yb = net.input_array(X), net.target_array(Y, 10, "mse")
    value = trainer.step(Xb, Yb)
    plain = net.loss_and_grad(X, Y, "mse")[0]
    expected = plain + sum(0.01 * np.abs(w).sum() + 0.05 * (w * w).sum() for w in W)
    np.testing.assert_allclose(value, expected, rtol=1e-12)

    def objective():
        net.set_params(W, net.biases)
        return net.loss_and_grad(X, Y, "mse")[0] + sum(
            0.01 * np.abs(w).sum() + 0.05 * (w * w).sum() for w in W)
    trainer.step(Xb, Yb)  # lr 0: fills the gradient buffers, parameters unchanged
    dW0 = np.array(net.backend.to_numpy(net.dW[0]))
    np.testing.assert_allclose(dW0, numeric_gradient(objective, W[0], 1e-6), rtol=1e-6, atol=1e-9)


def test_l2_shrinks_weights(rng):
    X, Y = regression(rng)
    norms = []
    for l2 in (0.0, 1.0):
        net = bp.MLP([2, 16, 1], seed=0)
        net.fit(X, Y, optimizer="sgd", lr=0.05, epochs=50, l2=l2)
        norms.append(sum(float((W * W).sum()) for W in net.weights))
    assert norms[1] < 0.5 * norms[0]


def test_dropout_backward_matches_finite_differences(backend, rng):
    X, Y = regression(rng, n=6)
    net = bp.MLP([2, 5, 4, 1], backend=backend, dtype="float64", seed=0)
    trainer = bp.Trainer(net, "sse", "sgd", dropout=[0.5, 0.3], seed=0)
    masks = trainer.masks(6)
    for M, p in zip(masks, (0.5, 0.3)):
        values = np.unique(np.asarray(net.backend.to_numpy(M)))
        np.testing.assert_allclose(values, [0.0, 1 / (1 - p)])
    Xb, Yb = net.input_array(X), net.target_array(Y, 6, "sse")
    W, b = net.weights, net.biases

    def loss():
        net.set_params(W, b)
        return float(net.run_loss_and_grad(Xb, Yb, "sse", masks=masks)[0])
    loss()
    analytic = [np.array(net.backend.to_numpy(g)) for g in net.dW]
    for l in range(3):
        np.testing.assert_allclose(analytic[l], numeric_gradient(loss, W[l], 1e-6), rtol=1e-6, atol=1e-9)


def test_dropout_only_during_fit(rng):
    X, Y = regression(rng)
    net = bp.MLP([2, 32, 32, 1], seed=0)
    F = net.predict(X)
    np.testing.assert_array_equal(net.predict(X), F)
    h = net.fit(X, Y, optimizer="adam", lr=1e-2, epochs=30, dropout=0.5, seed=0)
    assert np.isfinite(h.loss).all()
    np.testing.assert_array_equal(net.predict(X), net.predict(X))
    with pytest.raises(ValueError, match="dropout"):
        net.fit(X, Y, epochs=1, dropout=1.0)


def test_early_stopping_restores_the_best_parameters(rng):
    X, Y = regression(rng)
    X_val, Y_val = X, -Y  # training makes the validation loss worse
    net = bp.MLP([2, 16, 1], seed=0)
    history = net.fit(X, Y, optimizer="adam", lr=1e-2, epochs=200,
                      validation_data=(X_val, Y_val), early_stopping=5)
    assert history.stopped_epoch is not None and history.epochs < 200
    assert history.stopped_epoch - history.best_epoch == 5
    best = min(history.val_loss)
    assert history.val_loss[history.best_epoch] == best
    np.testing.assert_allclose(net.loss_and_grad(X_val, Y_val, "mse")[0], best, rtol=1e-5)
    with pytest.raises(ValueError, match="validation_data"):
        net.fit(X, Y, epochs=1, early_stopping=3)


def test_divergence_raises_naming_the_epoch_and_keeps_finite_parameters(backend, rng):
    X, Y = regression(rng)
    net = bp.MLP([2, 16, 1], backend=backend, seed=0)
    with pytest.raises(bp.NonFiniteLossError, match="epoch"):
        net.fit(X, 1e3 * Y, loss="sse", optimizer="sgd", lr=10.0, epochs=1000)
    assert all(np.isfinite(p).all() for p in net.weights + net.biases)
    assert np.isfinite(net.predict(X)).all()


def test_standardize_option(rng):
    X, Y = regression(rng)
    X = 100 + 50 * X
    net = bp.MLP([2, 8, 1], seed=0)
    net.fit(X, Y, epochs=5, standardize=True)
    assert net.standardizer is not None
    np.testing.assert_allclose(net.standardizer.mean, X.mean(axis=0))


def test_verbose_shows_a_progress_bar(rng, capsys):
    X, Y = regression(rng)
    bp.MLP([2, 4, 1], seed=0).fit(X, Y, epochs=3, verbose=True, validation_data=(X, Y))
    err = capsys.readouterr().err
    assert "3/3" in err and "val_loss" in err


def test_verbose_into_a_file_writes_a_bounded_amount(rng, tmp_path, monkeypatch):
    """stderr to a file (not a terminal): a few updates, not one rewrite per epoch (which wrote
    173 KB for 2,000 epochs); the final state is still there."""
    X, Y = regression(rng, n=16)
    log = tmp_path / "fit.log"
    with open(log, "w") as f:
        monkeypatch.setattr("sys.stderr", f)
        bp.MLP([2, 4, 1], seed=0).fit(X, Y, epochs=2000, verbose=True, validation_data=(X, Y))
    text = log.read_text()
    assert len(text) < 5000, f"{len(text)} bytes for 2,000 epochs"
    assert "2000/2000" in text and "val_loss" in text


def test_classification_reaches_high_accuracy(backend, rng):
    X = rng.normal(size=(200, 2))
    labels = (X[:, 0] * X[:, 1] > 0).astype(int)
    net = bp.MLP([2, 16, 16, 2], activation="relu", backend=backend, seed=0)
    net.fit(X, labels, loss="cross_entropy", optimizer="adam", lr=1e-2, epochs=150, batch_size=50)
    assert (net.predict(X).argmax(axis=1) == labels).mean() > 0.9
    net = bp.MLP([2, 16, 16, 1], activation="tanh", backend=backend, seed=0)
    net.fit(X, labels.reshape(-1, 1), loss="bce", optimizer="adam", lr=1e-2, epochs=150)
    assert ((net.predict(X)[:, 0] > 0) == labels).mean() > 0.9
