"""Bad input gets a clear Python exception that says what was wrong, before any kernel runs."""

import numpy as np
import pytest

import backprop as bp


@pytest.fixture
def net(backend):
    return bp.MLP([3, 4, 2], backend=backend, seed=0)


def good(n=5):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)), rng.normal(size=(n, 2))


@pytest.mark.parametrize("X,message", [
    (np.ones((5, 4)), "X has 4 columns but the network's input width"),
    (np.ones(5), "X must be 2-D"),
    (np.ones((5, 3, 1)), "X must be 2-D"),
    (np.ones((0, 3)), "empty batch"),
])
def test_bad_X_shapes(net, X, message):
    for call in (lambda: net.predict(X), lambda: net.loss_and_grad(X, good()[1][:len(X)]),
                 lambda: net.fit(X, np.ones((len(X), 2)), epochs=1)):
        with pytest.raises(ValueError, match=message):
            call()


def test_single_feature_hint():
    with pytest.raises(ValueError, match=r"reshape\(-1, 1\)"):
        bp.MLP([1, 2, 1]).predict(np.ones(4))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_data(net, bad):
    X, Y = good()
    X[2, 1] = bad
    with pytest.raises(ValueError, match=r"X contains NaN or Inf \(first at index \[2, 1\]\)"):
        net.predict(X)
    X, Y = good()
    Y[4, 0] = bad
    with pytest.raises(ValueError, match="Y contains NaN or Inf"):
        net.fit(X, Y, epochs=1)
    with pytest.raises(ValueError, match="contains NaN or Inf"):
        net.fit(good()[0], good()[1], epochs=1, validation_data=(X, Y))


def test_non_numeric_dtypes(net):
    with pytest.raises(TypeError, match="X must hold real numbers; got dtype <U"):
        net.predict(np.array([["a", "b", "c"]]))
    with pytest.raises(TypeError, match="complex"):
        net.predict(np.ones((2, 3), dtype=complex))
    with pytest.raises(TypeError, match="X must be an array of numbers"):
        net.predict([[1, 2, 3], [1, 2]])
    with pytest.raises(TypeError, match="Y must hold real numbers"):
        net.loss_and_grad(good()[0], np.full((5, 2), None))


def test_target_shapes(net):
    X, Y = good()
    with pytest.raises(ValueError, match="Y has 4 rows but X has 5 rows"):
        net.loss_and_grad(X, Y[:4])
    with pytest.raises(ValueError, match="Y has 3 columns but the network's output width"):
        net.loss_and_grad(X, np.ones((5, 3)))
    with pytest.raises(ValueError, match="Y must be 2-D"):
        net.loss_and_grad(X, np.ones(5), loss="mse")
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 1\]"):
        net.loss_and_grad(X, np.array([0, 1, 2, 0, 1]), loss="cross_entropy")
    with pytest.raises(ValueError, match="integer class labels"):
        net.loss_and_grad(X, np.array([0, 1, 0.5, 0, 1]), loss="cross_entropy")
    with pytest.raises(ValueError, match=r"bce targets must lie in \[0, 1\]"):
        net.loss_and_grad(X, 2 * np.ones((5, 2)), loss="bce")


def test_labels_and_one_hot_agree(net):
    X = good()[0]
    labels = np.array([0, 1, 1, 0, 1])
    a = net.loss_and_grad(X, labels, loss="cross_entropy")[0]
    b = net.loss_and_grad(X, np.eye(2)[labels], loss="cross_entropy")[0]
    c = net.loss_and_grad(X, labels.reshape(-1, 1), loss="cross_entropy")[0]
    assert a == pytest.approx(b) and a == pytest.approx(c)


@pytest.mark.parametrize("kwargs,message", [
    ({"activation": "swish"}, "unknown activation 'swish'; valid activations: tanh, sigmoid, relu, leaky_relu, identity"),
    ({"output_activation": "softmax"}, "unknown activation 'softmax'"),
    ({"init": "glorot"}, "unknown init 'glorot'; valid inits: xavier, he, lecun"),
    ({"backend": "tpu"}, "unknown backend 'tpu'; valid backends: numpy, cpu, cuda"),
    ({"dtype": "float16"}, "unknown dtype 'float16'; valid dtypes: float32, float64"),
    ({"activation": ["tanh", "relu"]}, "2 activations given for 1 hidden layers"),
])
def test_unknown_names_list_the_valid_ones(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        bp.MLP([3, 4, 2], **kwargs)


@pytest.mark.parametrize("layers", [[3], [], [3, 0, 2], [3, -1], [3, 2.5]])
def test_bad_layers(layers):
    with pytest.raises((ValueError, TypeError), match="layer|input and an output"):
        bp.MLP(layers)


def test_bad_training_options(net):
    X, Y = good()
    with pytest.raises(ValueError, match="unknown loss 'hinge'; valid losses: sse, mse, cross_entropy, bce"):
        net.fit(X, Y, loss="hinge")
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; valid optimizers: gd, sgd, adam"):
        net.fit(X, Y, optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr must be a finite number >= 0; got -0.1"):
        net.fit(X, Y, lr=-0.1)
    with pytest.raises(ValueError, match="lr must be"):
        bp.optim.Adam(lr=float("nan"))
    with pytest.raises(ValueError, match="batch_size"):
        net.fit(X, Y, batch_size=0)
    with pytest.raises(ValueError, match="l2 must be"):
        net.fit(X, Y, l2=-1)
    with pytest.raises(ValueError, match="momentum"):
        bp.optim.SGD(momentum=1.5)
    with pytest.raises(ValueError, match="patience"):
        net.fit(X, Y, validation_data=(X, Y), early_stopping=0)
    with pytest.raises(TypeError, match="lr_schedule"):
        net.fit(X, Y, lr_schedule=0.1)


def test_set_params_checks(net):
    W, b = net.weights, net.biases
    with pytest.raises(ValueError, match=r"weights\[1\] must have shape \(4, 2\)"):
        net.set_params([W[0], W[1].T], b)
    with pytest.raises(ValueError, match=r"biases\[0\] must have shape \(4,\)"):
        net.set_params(W, [b[0][:3], b[1]])
    W[0][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"weights\[0\] contains NaN"):
        net.set_params(W, b)
    with pytest.raises(ValueError, match="expected 2 weights"):
        net.set_params(W[:1], b)
