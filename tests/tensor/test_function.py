"""User-defined operations (bp.tensor.Function): per-call state and checked gradients."""

import numpy as np
import pytest

import backprop as bp


class Cube(bp.tensor.Function):
    name = "cube"

    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, g):
        return (3 * self.x ** 2 * g,)


class Scale(bp.tensor.Function):
    """Y = factor · A · B, with ``factor`` set once for every call."""

    def __init__(self, factor):
        self.factor = factor

    def forward(self, a, b):
        self.a, self.b = a, b
        return self.factor * a * b

    def backward(self, g):
        return self.factor * g * self.b, self.factor * g * self.a


def test_one_instance_used_twice_in_one_graph(backend):
    cube = Cube()
    a = bp.Tensor(np.array([1.0]), requires_grad=True, backend=backend)
    b = bp.Tensor(np.array([2.0]), requires_grad=True, backend=backend)
    L = (cube(a) + cube(b)).sum()
    L.backward()
    assert a.backend.to_numpy(a.grad).tolist() == [3.0]  # d(a³)/da at a = 1
    assert b.backend.to_numpy(b.grad).tolist() == [12.0]
    assert not hasattr(cube, "x")  # each call saved its state on its own copy

    x = bp.Tensor(np.array([1.0, 2.0]), requires_grad=True, backend=backend)
    (gx,) = bp.grad((cube(cube(x))).sum(), [x])  # x⁹
    assert gx.numpy().tolist() == [9.0, 9.0 * 2.0 ** 8]


def test_settings_of_the_instance_reach_every_call():
    scale = Scale(2.0)
    a = bp.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = bp.Tensor(np.array([3.0, 5.0]), requires_grad=True)
    ga, gb = bp.grad((scale(a, b) * scale(b, b)).sum(), [a, b])  # 4 a b³
    np.testing.assert_allclose(ga.numpy(), 4 * b.numpy() ** 3)
    np.testing.assert_allclose(gb.numpy(), 12 * a.numpy() * b.numpy() ** 2)


def test_a_gradient_of_the_wrong_shape_or_count():
    class Wrong(bp.tensor.Function):
        name = "wrong"

        def forward(self, x):
            return x * 2.0

        def backward(self, g):
            return (np.ones((5, 5)),)

    class TooMany(bp.tensor.Function):
        def forward(self, x):
            return x * 2.0

        def backward(self, g):
            return (g, g)

    x = bp.Tensor(np.ones((3, 1)), requires_grad=True)
    with pytest.raises(ValueError, match="wrong: the Function's backward returned a gradient of "
                                         "shape \\(5, 5\\) for input 0 of shape \\(3, 1\\)"):
        Wrong()(x).sum().backward()
    assert x._grad is None
    with pytest.raises(ValueError, match="TooMany: the Function's backward returned 2 gradient"
                                         "\\(s\\) for 1 input\\(s\\)"):
        TooMany()(x).sum().backward()


def test_a_backward_may_return_one_array_or_numbers():
    class Half(bp.tensor.Function):
        def forward(self, x):
            return x * 0.5

        def backward(self, g):
            return g * 0.5  # one array, not a tuple

    class ScalarSquare(bp.tensor.Function):
        def forward(self, x):
            self.x = float(x)
            return x * x

        def backward(self, g):
            return (2.0 * self.x * float(g),)  # a Python number for a 0-d input

    x = bp.Tensor(np.array([1.0, 4.0]), requires_grad=True)
    Half()(x).sum().backward()
    assert x.grad.tolist() == [0.5, 0.5]
    s = bp.Tensor(np.array(3.0), requires_grad=True)
    ScalarSquare()(s).backward()
    assert float(s.grad) == 6.0
