"""User-defined operations: a forward and a backward on arrays, as one node of the tape.

    class Cube(bp.tensor.Function):
        name = "cube"
        def forward(self, x):            # arrays of the backend in, an array out
            self.x = x
            return x ** 3
        def backward(self, g):           # dLoss/dY in, one dLoss/dinput per input out
            return (3 * self.x ** 2 * g,)

    y = Cube()(t)

Such a backward is array code, so it is not recorded: ``create_graph=True`` through it raises
NotImplementedError naming the operation (write it from Tensor operations to get second
derivatives).
"""

from __future__ import annotations

from .core import Tensor, as_tensor, backward_of, result


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
        value = self.forward(*(t.value for t in inputs))
        return result(value, first.backend, inputs, _backward_named(self._name()), self)

    def _name(self):
        return self.name or type(self).__name__


_BACKWARDS: dict = {}


def _backward_named(name):
    """One backward function per operation name (its name is what errors show)."""
    if name not in _BACKWARDS:
        @backward_of(name, graph=False)
        def backward(out, g, graph):
            grads = out._saved.backward(g)
            return tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
        _BACKWARDS[name] = backward
    return _BACKWARDS[name]
