"""User-defined operations: a forward and a backward on arrays, as one node of the tape.

    class Cube(bp.tensor.Function):
        name = "cube"
        def forward(self, x):            # arrays of the backend in, an array out
            self.x = x
            return x ** 3
        def backward(self, g):           # dLoss/dY in, one dLoss/dinput per input out
            return (3 * self.x ** 2 * g,)

    cube = Cube()
    y = cube(t) * cube(t)

Each call runs ``forward`` on its own shallow copy of the instance, and the node it makes keeps
that copy for ``backward``: what a forward saves on ``self`` belongs to its call, so one instance
can be used any number of times in one graph (as the ``ctx`` of torch.autograd.Function). What
the instance held before the call (settings given to ``__init__``) is seen by every call.

``backward`` returns one gradient per input (None for an input that needs none), each of that
input's shape; anything else is an error naming the operation.

Such a backward is array code, so it is not recorded: ``create_graph=True`` through it raises
NotImplementedError naming the operation (write it from Tensor operations to get second
derivatives).
"""

from __future__ import annotations

import copy

from .core import Tensor, _fail, as_tensor, backward_of, is_backend_array, result, to_backend


class Function:
    """Subclass with ``forward(*arrays) -> array`` and ``backward(g) -> tuple of arrays``."""

    name = None

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, g):
        raise NotImplementedError

    def __call__(self, *inputs):
        first = next((t for t in inputs if isinstance(t, Tensor)), None)
        if first is None:
            raise TypeError(f"{self._name()}: expected at least one Tensor input")
        inputs = tuple(as_tensor(t, first, self._name()) for t in inputs)
        call = copy.copy(self)  # this call's own state: the node's saved object
        value = call.forward(*(t.value for t in inputs))
        return result(value, first.backend, inputs, _backward_named(self._name()), call)

    def _name(self):
        return self.name or type(self).__name__


_BACKWARDS: dict = {}


def _backward_named(name):
    """One backward function per operation name (its name is what errors show)."""
    if name not in _BACKWARDS:
        @backward_of(name, graph=False)
        def backward(out, g, graph):
            grads = out._saved.backward(g)
            grads = grads if isinstance(grads, (tuple, list)) else (grads,)
            return _checked(name, out._parents, grads)
        _BACKWARDS[name] = backward
    return _BACKWARDS[name]


def _checked(name, inputs, grads):
    """The gradients a Function's backward returned, checked: one per input, each None or of
    its input's shape (numbers and numpy scalars become arrays of the input's backend)."""
    if len(grads) != len(inputs):
        _fail(name, ValueError, f"the Function's backward returned {len(grads)} gradient(s) for "
                                f"{len(inputs)} input(s)")
    out = []
    for i, (t, g) in enumerate(zip(inputs, grads)):
        if g is not None:
            if not is_backend_array(t.backend, g):
                g = to_backend(t.backend, g, t.value.dtype)
            if tuple(g.shape) != t.shape:
                _fail(name, ValueError, f"the Function's backward returned a gradient of shape "
                                        f"{tuple(g.shape)} for input {i} of shape {t.shape}")
        out.append(g)
    return tuple(out)
