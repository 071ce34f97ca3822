"""Tensors with .value and .grad on every backend (McAllester's arrays and tensors).

Every array is an object with ``value`` and ``grad`` of the same shape; every operation records
its backward beside its forward, and ``backward()`` runs them in reverse. The modules, one idea each,
from the bottom up (each imports only modules above it in this list, at the top of the file):

    kernels          the backend kernels the operations call (gemm, dense, activations, losses)
    core             the Tensor, making tensors inside operations, no_grad (per thread)
    autograd         the tape: reverse topological order, freeing the graph, ``grad``, Tensor.backward
    function         user-defined operations: a forward and a backward on arrays
    ops_reduce       sum, mean, broadcast_to, sum_to
    ops_elementwise  + − * / ** neg, exp log sin cos sqrt abs, tanh sigmoid relu leaky_relu
    ops_shape        reshape, transpose, indexing, concatenate, stack
    ops_linalg       @ (gemm) and einsum
    ops_loss         softmax, log_softmax, sse, mse, cross_entropy, bce
    dense            the dense layer as one node; the MLP as a function of Tensors
    derivatives      an MLP's derivatives w.r.t. its inputs as one node (Taylor-mode kernels)

core's Tensor holds the value and the gradient; the modules above it set the methods that are
operations (``backward``, ``+``, ``.T``, ``.sum()``, ...) on it when they are imported.
"""

from .autograd import backward, grad
from .core import Tensor, enable_grad, is_grad_enabled, no_grad
from .dense import dense, forward as mlp_forward, parameters as mlp_parameters
from .derivatives import derivatives
from .function import Function
from .ops_elementwise import (abs, activation, add, astype, cos, div, exp, leaky_relu, log, mul,
                              neg, power, relu, sigmoid, sin, sqrt, sub, tanh)
from .ops_linalg import einsum, matmul
from .ops_loss import bce, cross_entropy, log_softmax, loss, mse, softmax, softplus, sse
from .ops_reduce import broadcast_to, mean, sum, sum_to
from .ops_shape import concatenate, getitem, index_add, reshape, stack, transpose

__all__ = ["Tensor", "Function", "backward", "grad", "no_grad", "enable_grad", "is_grad_enabled",
           "dense", "mlp_forward", "mlp_parameters", "derivatives",
           "add", "sub", "mul", "div", "neg", "power", "astype",
           "exp", "log", "sin", "cos", "sqrt", "abs", "tanh", "sigmoid", "relu", "leaky_relu",
           "activation", "einsum", "matmul", "sum", "mean", "broadcast_to", "sum_to",
           "reshape", "transpose", "getitem", "index_add", "concatenate", "stack",
           "softmax", "log_softmax", "softplus", "sse", "mse", "cross_entropy", "bce", "loss"]
