"""The MLP API: parameters, prediction, gradients, copies across backends, files."""

import json
import os

import numpy as np
import pytest

import backprop as bp


def test_contract_shapes_and_types(backend, dtype, rng):
    net = bp.MLP([1, 50, 50, 1], activation="tanh", output_activation="identity", init="xavier",
                 backend=backend, dtype=dtype, seed=0)
    assert [W.shape for W in net.weights] == [(1, 50), (50, 50), (50, 1)]
    assert [b.shape for b in net.biases] == [(50,), (50,), (1,)]
    assert all(isinstance(W, np.ndarray) and W.dtype == dtype for W in net.weights + net.biases)
    assert all(not b.any() for b in net.biases)
    X, Y = rng.normal(size=(9, 1)), rng.normal(size=(9, 1))
    F = net.predict(X)
    assert isinstance(F, np.ndarray) and F.shape == (9, 1) and F.dtype == dtype
    loss, grads = net.loss_and_grad(X, Y, loss="sse")
    assert isinstance(loss, float)
    assert [g.shape for g in grads.weights] == [(1, 50), (50, 50), (50, 1)]
    assert [g.shape for g in grads.biases] == [(50,), (50,), (1,)]
    assert grads.X.shape == (9, 1)
    np.testing.assert_allclose(loss, 0.5 * np.sum((F.astype(float) - Y) ** 2), rtol=1e-5)


def test_forward_is_the_equations(rng):
    net = bp.MLP([3, 4, 2], activation="sigmoid", output_activation="tanh", dtype="float64", seed=0)
    W = [rng.normal(size=(3, 4)), rng.normal(size=(4, 2))]
    b = [rng.normal(size=4), rng.normal(size=2)]
    net.set_params(W, b)
    X = rng.normal(size=(5, 3))
    A1 = 1 / (1 + np.exp(-(X @ W[0] + b[0])))
    np.testing.assert_allclose(net.predict(X), np.tanh(A1 @ W[1] + b[1]), rtol=1e-12)


def test_weights_are_copies_and_set_params_copies_in(rng):
    net = bp.MLP([2, 3, 1], seed=0)
    W = net.weights
    W[0][...] = 7.0
    assert not np.any(net.weights[0] == 7.0)
    net.set_params(W, net.biases)
    W[0][...] = 1.0
    assert np.all(net.weights[0] == 7.0)


def test_seed_reproducible_and_same_on_every_backend(backend):
    a = bp.MLP([4, 8, 3], backend="numpy", seed=42)
    b = bp.MLP([4, 8, 3], backend=backend, seed=42)
    c = bp.MLP([4, 8, 3], backend="numpy", seed=43)
    for Wa, Wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(Wa, Wb)
    assert not np.array_equal(a.weights[0], c.weights[0])


@pytest.mark.parametrize("init,variance", [("xavier", lambda i, o: 2 / (i + o)),
                                           ("he", lambda i, o: 2 / i), ("lecun", lambda i, o: 1 / i)])
def test_init_variances(init, variance):
    net = bp.MLP([400, 300, 200], init=init, dtype="float64", seed=0)
    for W in net.weights:
        fan_in, fan_out = W.shape
        assert abs(W.var() / variance(fan_in, fan_out) - 1) < 0.03
        assert abs(W.mean()) < 0.01


def test_to_another_backend_keeps_parameters_and_outputs(backend, rng):
    net = bp.MLP([3, 7, 2], activation="relu", dtype="float64", seed=0)
    other = net.to(backend)
    assert other.backend.name == backend
    X = rng.normal(size=(4, 3))
    np.testing.assert_allclose(other.predict(X), net.predict(X), rtol=1e-10, atol=1e-12)
    as32 = net.to(backend, dtype="float32")
    assert as32.dtype == np.float32
    np.testing.assert_allclose(as32.predict(X), net.predict(X), rtol=1e-4, atol=1e-5)


def test_save_load_round_trip(tmp_path, backend, rng):
    net = bp.MLP([3, 6, 2], activation=["leaky_relu"], output_activation="sigmoid",
                 init="he", dtype="float64", seed=5)
    net.standardizer = bp.Standardizer().fit(rng.normal(3.0, 2.0, size=(20, 3)))
    path = tmp_path / "model.npz"
    net.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary left behind
    loaded = bp.MLP.load(path, backend=backend)
    assert loaded.layers == [3, 6, 2] and loaded.activations == ["leaky_relu"]
    assert loaded.output_activation == "sigmoid" and loaded.dtype == np.float64
    X = rng.normal(size=(5, 3))
    np.testing.assert_allclose(loaded.predict(X), net.predict(X), rtol=1e-12)


def test_save_is_atomic(tmp_path, monkeypatch):
    net = bp.MLP([2, 2], seed=0)
    path = tmp_path / "model.npz"
    net.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        bp.MLP([2, 2], seed=1).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_load_rejects_corrupt_foreign_and_future_files(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ValueError, match="not a backprop model file"):
        bp.MLP.load(garbage)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3))
    with pytest.raises(ValueError, match="not a backprop model file"):
        bp.MLP.load(foreign)
    net = bp.MLP([2, 3, 1], seed=0)
    good = tmp_path / "good.npz"
    net.save(good)
    with np.load(good) as data:
        arrays = dict(data)
    header = json.loads(str(arrays["header"]))
    future = dict(arrays, header=np.array(json.dumps(dict(header, version=99))))
    np.savez(tmp_path / "future.npz", **future)
    with pytest.raises(ValueError, match="another version"):
        bp.MLP.load(tmp_path / "future.npz")
    damaged = {k: v for k, v in arrays.items() if k != "W1"}
    np.savez(tmp_path / "damaged.npz", **damaged)
    with pytest.raises(ValueError, match="damaged"):
        bp.MLP.load(tmp_path / "damaged.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a backprop model file"):
        bp.MLP.load(truncated)
    with pytest.raises(FileNotFoundError):
        bp.MLP.load(tmp_path / "missing.npz")


def test_standardizer_is_applied_at_predict_and_in_dX(rng):
    X = rng.normal(5.0, 3.0, size=(30, 2))
    X[:, 1] = 4.0  # a constant column is only centred
    s = bp.Standardizer().fit(X)
    Z = s.transform(X)
    np.testing.assert_allclose(Z[:, 0].mean(), 0, atol=1e-12)
    np.testing.assert_allclose(Z[:, 0].std(), 1, rtol=1e-12)
    np.testing.assert_allclose(Z[:, 1], 0)
    np.testing.assert_allclose(s.inverse_transform(Z), X)
    net = bp.MLP([2, 4, 1], dtype="float64", seed=0)
    plain = net.predict(Z)
    net.standardizer = s
    np.testing.assert_allclose(net.predict(X), plain)
    Y = rng.normal(size=(30, 1))
    assert bp.gradcheck(net, X[:6], Y[:6]) < 1e-6  # dX is taken with respect to the raw X


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_a_model_survives_pickling_on_the_host_backends(backend):
    """An unpickled array's dtype is an equal dtype, not numpy's singleton: kernels accept it."""
    import pickle

    net = bp.MLP([2, 4, 1], backend=backend, seed=0)
    X = np.random.default_rng(0).normal(size=(5, 2))
    again = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(again.predict(X), net.predict(X))
    again.fit(X, np.ones((5, 1)), epochs=2)
