"""Input the checks used to miss: array-likes, masked arrays, rejected calls that changed the
model, non-finite hyperparameters, standardizers that divide by zero, shared standardizers."""

import numpy as np
import pytest

import backprop as bp


def data(n=20, rng=None):
    rng = rng or np.random.default_rng(0)
    X = rng.normal(size=(n, 3))
    return X, np.tanh(X[:, :2])


class ArrayLike:
    """What a pandas Series or DataFrame looks like to the checks: shape and dtype, numpy
    conversion through __array__, but none of numpy's methods (reshape, indexing by tuples)."""

    def __init__(self, a):
        self._a = np.asarray(a)
        self.shape, self.dtype = self._a.shape, self._a.dtype

    def __array__(self, dtype=None, copy=None):
        return self._a if dtype is None else self._a.astype(dtype)

    def __len__(self):
        return len(self._a)


def test_array_likes_are_accepted_everywhere(backend):
    X, Y = data()
    labels = (X[:, 0] > 0).astype(np.int64)
    results = []
    for wrap in (np.asarray, ArrayLike):
        net = bp.MLP([3, 5, 2], backend=backend, dtype="float64", seed=0)
        h = net.fit(wrap(X), wrap(Y), epochs=3, batch_size=8, seed=0,
                    validation_data=(wrap(X), wrap(Y)), standardize=True)
        loss, grads = net.loss_and_grad(wrap(X), wrap(Y), "mse")
        ce = net.loss_and_grad(wrap(X), wrap(labels), "cross_entropy")[0]
        results.append((h.loss, net.predict(wrap(X)), loss, grads.X, ce))
        s = bp.Standardizer().fit(wrap(X))
        np.testing.assert_allclose(s.mean, X.mean(axis=0))
        net.set_params([wrap(W) for W in net.weights], [wrap(b) for b in net.biases])
    for a, b in zip(results[0], results[1]):
        np.testing.assert_array_equal(a, b)


def test_pandas_series_and_dataframes():
    pd = pytest.importorskip("pandas")
    X, Y = data()
    net = bp.MLP([3, 4, 1], dtype="float64", seed=0)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    net.fit(frame, pd.Series(Y[:, 0]).to_frame(), epochs=2)
    np.testing.assert_array_equal(net.predict(frame), net.predict(X))
    labels = pd.Series((X[:, 0] > 0).astype(int))
    clf = bp.MLP([3, 4, 2], seed=0)
    clf.fit(frame, labels, loss="cross_entropy", epochs=2)
    with pytest.raises(ValueError, match="cross_entropy"):
        clf.fit(frame, labels, loss="mse", epochs=1)


def test_multiclass_with_labels_suggests_cross_entropy():
    X, _ = data()
    labels = (X[:, 0] > 0).astype(int)
    with pytest.raises(ValueError, match=r'loss="cross_entropy"') as info:
        bp.MLP([3, 4, 2]).fit(X, labels, loss="mse", epochs=1)
    assert "reshape" not in str(info.value)
    with pytest.raises(ValueError, match=r"reshape\(-1, 1\)"):  # one output: the reshape hint
        bp.MLP([3, 4, 1]).fit(X, labels.astype(float), loss="mse", epochs=1)


def test_masked_arrays(backend):
    X, Y = data()
    net = bp.MLP([3, 4, 2], backend=backend, dtype="float64", seed=0)
    hidden = np.ma.masked_array(X.copy(), mask=np.zeros_like(X, dtype=bool))
    hidden.data[3, 2] = np.nan  # a NaN under the mask must not pass as a number
    hidden.mask[3, 2] = True
    for call in (lambda: net.predict(hidden), lambda: net.fit(hidden, Y, epochs=1),
                 lambda: net.loss_and_grad(hidden, Y), lambda: bp.Standardizer().fit(hidden)):
        with pytest.raises(ValueError, match=r"X is a masked array with masked entries \(first at "
                                             r"index \[3, 2\]\).*filled"):
            call()
    with pytest.raises(ValueError, match="Y is a masked array"):
        net.loss_and_grad(X, np.ma.masked_greater(Y, 0.5))
    # nothing masked: the data is used
    plain = np.ma.masked_array(X, mask=False)
    np.testing.assert_array_equal(net.predict(plain), net.predict(X))


def test_a_rejected_fit_changes_nothing(backend):
    X, Y = data()
    net = bp.MLP([3, 4, 2], backend=backend, seed=0)
    weights = net.weights
    bad_calls = [
        dict(Y=Y[:, :1]),                                     # Y of the wrong width
        dict(Y=Y[:5]),                                        # rows disagree
        dict(validation_data=(X, Y[:, :1])),
        dict(validation_data=(X,)),
        dict(batch_size=0),
        dict(batch_size=2.5),
        dict(epochs=-1),
        dict(lr_schedule=lambda epoch: -1.0),
        dict(lr_schedule=lambda epoch: float("nan")),
        dict(early_stopping=3),                               # needs validation_data
        dict(optimizer=bp.optim.GD(), batch_size=4),
        dict(dropout=1.0),
        dict(seed=-1),
    ]
    for standardizer in (None, bp.Standardizer().fit(5 + 2 * X)):
        net.standardizer = standardizer
        mean = None if standardizer is None else standardizer.mean.copy()
        for bad in bad_calls:
            kwargs = dict(Y=Y, epochs=2, standardize=True)
            kwargs.update(bad)
            with pytest.raises((ValueError, TypeError)):
                net.fit(X, kwargs.pop("Y"), **kwargs)
            assert net.standardizer is standardizer, bad
            if standardizer is not None:
                np.testing.assert_array_equal(standardizer.mean, mean)
            for got, want in zip(net.weights, weights):
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("make,message", [
    (lambda: bp.optim.Adam(eps=float("inf")), "eps must be a finite number"),
    (lambda: bp.optim.Adam(eps=float("nan")), "eps must be a finite number"),
    (lambda: bp.optim.Adam(eps=0.0), "eps must be a finite number > 0"),
    (lambda: bp.optim.Adam(eps=-1e-8), "eps must be a finite number > 0"),
    (lambda: bp.optim.Adam(beta1=float("nan")), "beta1 must be a finite number"),
    (lambda: bp.optim.Adam(beta2=1.0), r"beta2 must be in \[0, 1\)"),
    (lambda: bp.optim.Adam(beta1=-0.1), r"beta1 must be in \[0, 1\)"),
    (lambda: bp.optim.Adam(lr=float("inf")), "lr must be a finite number"),
    (lambda: bp.optim.SGD(momentum=float("nan")), "momentum must be a finite number"),
    (lambda: bp.optim.SGD(momentum=float("inf")), "momentum must be a finite number"),
    (lambda: bp.optim.SGD(lr=float("-inf")), "lr must be a finite number"),
    (lambda: bp.optim.exponential_decay(0.1, 0.5, every=0), "every must be > 0"),
    (lambda: bp.optim.cosine_decay(0.1, 0), "epochs > 0"),
    (lambda: bp.optim.cosine_decay(0.1, float("nan")), "epochs must be a finite number"),
    (lambda: bp.optim.piecewise_constant([float("nan")], [0.1, 0.2]), "boundary must be a finite"),
    (lambda: bp.EarlyStopping(patience=float("nan")), "patience must be an integer"),
    (lambda: bp.EarlyStopping(patience=2, min_delta=float("inf")), "min_delta must be a finite"),
])
def test_optimizer_hyperparameters_must_be_finite(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_standardizer_scale_must_be_positive_and_finite(tmp_path):
    for bad in (0.0, -1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="scale"):
            bp.Standardizer.from_arrays([0.0, 0.0, 0.0], [1.0, bad, 1.0])
    with pytest.raises(ValueError, match="mean"):
        bp.Standardizer.from_arrays([0.0, np.nan, 0.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="one length"):
        bp.Standardizer.from_arrays([0.0, 0.0], [1.0, 1.0, 1.0])
    net = bp.MLP([3, 4, 1], seed=0)
    net.standardizer = bp.Standardizer.from_arrays([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    for bad in (0.0, -2.0, np.nan):
        net.standardizer.scale[1] = bad  # what a hand-edited or foreign file can hold
        path = tmp_path / "model.npz"
        net.save(path)
        with pytest.raises(ValueError, match="damaged.*scale"):
            bp.MLP.load(path)


def test_standardizer_arrays_are_the_models_own(backend):
    X, _ = data()
    mean, scale = X.mean(axis=0), X.std(axis=0)
    net = bp.MLP([3, 4, 2], backend=backend, dtype="float64", seed=0)
    net.standardizer = bp.Standardizer.from_arrays(mean, scale)
    F = net.predict(X)
    mean[...] = 100.0  # the caller's arrays: no longer the model's
    scale[...] = 1e-3
    np.testing.assert_array_equal(net.predict(X), F)
    for other in (net.copy(), net.to("numpy"), net.to(backend, dtype="float32")):
        assert other.standardizer is not net.standardizer
        other.standardizer.mean[...] = 7.0
        other.standardizer.scale[...] = 3.0
        np.testing.assert_array_equal(net.predict(X), F)


def test_activation_none_names_the_valid_ones():
    for kwargs in ({"activation": None}, {"output_activation": None}, {"activation": 3}):
        with pytest.raises(ValueError, match=r"unknown activation (None|3); valid activations: "
                                             r"tanh, sigmoid"):
            bp.MLP([3, 4, 1], **kwargs)
    with pytest.raises(ValueError, match="unknown activation None"):
        bp.MLP([3, 4, 4, 1], activation=["tanh", None])


def test_arrays_of_the_backend_are_accepted_as_they_are(backend):
    """On the cuda backend these are device arrays: checked and standardized on the device."""
    X, Y = data()
    results = []
    for on_backend in (False, True):
        net = bp.MLP([3, 5, 2], backend=backend, dtype="float64", seed=0)
        wrap = (lambda a: net.backend.asarray(a, np.float64)) if on_backend else (lambda a: a)
        h = net.fit(wrap(X), wrap(Y), epochs=3, batch_size=8, seed=0, standardize=False)
        net.standardizer = bp.Standardizer().fit(X)
        F = np.asarray(net.backend.to_numpy(net.predict(wrap(X))))
        loss, grads = net.loss_and_grad(wrap(X), wrap(Y), "mse")
        results.append((h.loss, F, loss, grads.X))
        big = X.copy()
        big[1, 1] = 1e39
        with pytest.raises(ValueError, match="beyond the range"):
            bp.MLP([3, 5, 2], backend=backend, seed=0).predict(wrap(big))
        nan = X.copy()
        nan[2, 0] = np.nan
        with pytest.raises(ValueError, match=r"X contains NaN or Inf \(first at index \[2, 0\]\)"):
            net.predict(wrap(nan))
    for a, b in zip(results[0], results[1]):
        np.testing.assert_allclose(a, b, rtol=1e-12)
