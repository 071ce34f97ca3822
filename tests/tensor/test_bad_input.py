"""Bad input to the Tensor layer: a clear exception naming the operation."""

import re

import numpy as np
import pytest

import backprop as bp


def test_einsum_specs_and_shapes():
    A = bp.Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="explicit output"):
        bp.einsum("ij", A)
    with pytest.raises(ValueError, match="diagonal"):
        bp.einsum("ii->i", bp.Tensor(np.ones((2, 2))))
    with pytest.raises(ValueError, match="names 2 inputs; 1 given"):
        bp.einsum("ij,jk->ik", A)
    with pytest.raises(ValueError, match="'ijk' for an array of shape \\(2, 3\\)"):
        bp.einsum("ijk->i", A)
    with pytest.raises(ValueError, match="index 'j' has size 3 in one operand and 4"):
        bp.einsum("ij,jk->ik", A, bp.Tensor(np.ones((4, 2))))
    with pytest.raises(ValueError, match="output index not found"):
        bp.einsum("ij->k", A)


def test_shapes_that_do_not_fit():
    A = bp.Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="matmul: shapes \\(2, 3\\) and \\(2, 3\\) do not chain"):
        A @ A
    with pytest.raises(ValueError, match="reshape: cannot reshape"):
        A.reshape(4, 2)
    with pytest.raises(ValueError, match="sum: axis 2 is out of range"):
        A.sum(2)
    with pytest.raises(ValueError, match="sse: targets of shape \\(3, 2\\)"):
        bp.sse(A, np.ones((3, 2)))
    with pytest.raises(ValueError, match="cross_entropy: labels must lie in 0..2"):
        bp.cross_entropy(A, np.array([0, 3]))


def test_mixing_backends_or_dtypes():
    a = bp.Tensor(np.ones(3), backend="numpy")
    with pytest.raises(TypeError, match="mul: tensors of different dtypes \\(float64 and float32\\)"):
        a * bp.Tensor(np.ones(3), dtype="float32")
    if "cpu" in bp.available_backends():
        with pytest.raises(TypeError, match="add: tensors on different backends \\('numpy' and 'cpu'\\)"):
            a + bp.Tensor(np.ones(3), backend="cpu")
        net = bp.MLP([3, 1], backend="cpu", dtype="float64")
        with pytest.raises(TypeError, match="net\\(X\\): X is on backend 'numpy'"):
            net(bp.Tensor(np.ones((2, 3))))


def test_create_graph_through_an_operation_without_it():
    class Cube(bp.tensor.Function):
        name = "cube"

        def forward(self, x):
            self.x = x
            return x ** 3

        def backward(self, g):
            return (3 * self.x ** 2 * g,)
    x = bp.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (gx,) = bp.grad(Cube()(x).sum(), [x])
    assert gx.numpy().tolist() == [3.0, 12.0]
    with pytest.raises(NotImplementedError, match="create_graph=True through the operation 'cube'"):
        bp.grad(Cube()(x).sum(), x, create_graph=True)


def test_backward_from_what_cannot_start_one():
    x = bp.Tensor(np.ones(2))
    with pytest.raises(RuntimeError, match="does not require grad"):
        x.sum().backward()
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        bp.Tensor(np.ones(2), dtype="int32")
    with pytest.raises(ValueError, match="activation: unknown activation 'swish'"):
        bp.tensor.activation(x, "swish")


def test_sum_to_a_shape_that_does_not_broadcast():
    A = bp.Tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    for shape in [(4, 3), (2, 6), (3,), (1, 3, 4), (12,), (3, 2)]:
        with pytest.raises(ValueError, match=f"sum_to: shape {re.escape(str(shape))} does not "
                                             "broadcast to the tensor's shape \\(3, 4\\)"):
            bp.tensor.sum_to(A, shape)
    for shape, expected in [((4,), A.numpy().sum(0)), ((1, 4), A.numpy().sum(0, keepdims=True)),
                            ((3, 1), A.numpy().sum(1, keepdims=True)), ((), A.numpy().sum()),
                            ((1, 1), A.numpy().sum(keepdims=True)), ((3, 4), A.numpy())]:
        np.testing.assert_array_equal(bp.tensor.sum_to(A, shape).numpy(), expected)
