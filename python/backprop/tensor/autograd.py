"""The tape: backward passes in reverse topological order, and ``grad`` (gradients as Tensors).

The order is found by an iterative depth-first search (no recursion: a chain of 100,000
operations backpropagates). Gradients arriving at one tensor from several uses are summed
before its own backward runs, so each leaf's ``grad`` is added to exactly once per call.
After the pass the graph is freed (each operation forgets its inputs and saved arrays) unless
``retain_graph`` is true; backpropagating through a freed operation again is an error, as in
PyTorch.

The pass records nothing unless ``create_graph`` is true: it sets the grad mode of its own
thread only (core's ``_mode``), and puts it back when it ends, by an exception too. This module
also gives the Tensor its ``backward`` method.
"""

from __future__ import annotations

import numpy as np

from .core import Tensor, _mode, backward_of, leaf, to_backend


@backward_of("freed")  # graph: with create_graph too, the error is this one
def _freed(out, g, graph):
    raise RuntimeError(
        f"backward through the graph a second time: the operation {out._saved!r} that made this "
        "tensor was freed by an earlier backward; pass retain_graph=True to the first "
        "backward (or grad) to keep it")


def _topological(roots):
    """Every tensor that requires grad and leads to ``roots``, each after all its parents."""
    order, seen = [], set()
    add, emit = seen.add, order.append
    stack = [(r, False) for r in roots]
    push, pop = stack.append, stack.pop
    while stack:
        t, expanded = pop()
        if expanded:
            emit(t)
            continue
        k = id(t)
        if k in seen:
            continue
        add(k)
        push((t, True))
        for p in t._parents:
            if p.requires_grad and id(p) not in seen:
                push((p, False))
    return order


def _seed(root, grad, create_graph, where):
    """dObjective/droot: ``grad`` (of the root's shape, cast to its dtype), or 1 for a scalar
    root."""
    if not isinstance(root, Tensor):
        raise TypeError(f"{where}: outputs must be Tensors; got {type(root).__name__}")
    if not root.requires_grad:
        raise RuntimeError(f"{where}: this tensor does not require grad and has no recorded "
                           "operations (make an input with requires_grad=True)")
    if grad is None:
        if root.value.size != 1:
            raise ValueError(f"{where}: backward() starts from a scalar without a gradient; this "
                             f"tensor has shape {root.shape}: pass grad= of that shape")
        g = root.backend.empty(root.value.shape, root.value.dtype)
        g.fill(1)
    elif isinstance(grad, Tensor):
        if tuple(grad.shape) != root.shape:
            raise ValueError(f"{where}: grad of shape {grad.shape} for a tensor of shape {root.shape}")
        if grad.backend is not root.backend:
            raise TypeError(f"{where}: grad is on backend {grad.backend.name!r}, the tensor on "
                            f"{root.backend.name!r}")
        if create_graph:  # cast in the graph: the seed may itself be differentiated
            return grad.astype(root.value.dtype)
        g = grad.value
        if g.dtype != root.value.dtype:
            g = root.backend.asarray(g, root.value.dtype)
    else:
        if tuple(np.shape(grad)) != root.shape:
            raise ValueError(f"{where}: grad of shape {tuple(np.shape(grad))} for a tensor of "
                             f"shape {root.shape}")
        # the root's dtype (a float32 seed of a float64 graph is cast), its shape (0-d kept)
        g = to_backend(root.backend, grad, root.value.dtype)
    return leaf(g, root.backend) if create_graph else g


def _free(t):
    name = t._op.op_name
    t._op = _freed
    t._parents = ()
    t._saved = name


def run(roots, grads, retain_graph, create_graph, inputs=None, where="backward"):
    """The backward pass from ``roots`` (seeded with ``grads``). With ``inputs`` (a list of
    Tensors) returns their gradients (None where none arrived) and touches no ``grad``;
    without, accumulates into the ``grad`` of every leaf reached."""
    if grads is None:
        grads = [None] * len(roots)
    elif len(grads) != len(roots):
        raise ValueError(f"{where}: {len(grads)} gradient(s) given for {len(roots)} output(s); "
                         "pass one per output (None for a scalar output)")
    pending = {}
    for r, g in zip(roots, grads):
        g = _seed(r, g, create_graph, where)
        prev = pending.get(id(r))
        pending[id(r)] = g if prev is None else prev + g
    order = _topological(roots)
    wanted = None
    if inputs is not None:
        wanted = {}
        for i, t in enumerate(inputs):  # an input given twice gets its gradient at both places
            wanted.setdefault(id(t), []).append(i)
    found = [None] * (0 if inputs is None else len(inputs))
    mode = _mode
    saved_mode = mode.enabled
    mode.enabled = bool(create_graph)
    try:
        for t in reversed(order):
            g = pending.pop(id(t), None)
            if g is None:
                continue
            if wanted is not None and id(t) in wanted:
                for i in wanted[id(t)]:
                    found[i] = g
            op = t._op
            if op is None:
                if wanted is None:
                    _accumulate(t, g, create_graph)
                continue
            if create_graph and not op.graph_ok:
                raise NotImplementedError(
                    f"create_graph=True through the operation {op.op_name!r}: its backward is not "
                    "written with Tensor operations, so it cannot be differentiated again")
            results = op(t, g, create_graph)
            for p, gp in zip(t._parents, results):
                if gp is None or not p.requires_grad:
                    continue
                k = id(p)
                prev = pending.get(k)
                pending[k] = gp if prev is None else prev + gp
            if not retain_graph:
                _free(t)
    finally:
        mode.enabled = saved_mode
    return found


def _accumulate(t, g, create_graph):
    """leaf.grad += g (the first gradient is copied: ``grad`` never aliases another array)."""
    if create_graph:
        t.grad_tensor = g if t.grad_tensor is None else t.grad_tensor + g
        g = g.value
    if t._grad is None:
        t._grad = g.copy()
    else:
        t._grad += g


def backward(roots, grads=None, retain_graph=False, create_graph=False):
    """Backpropagates from ``roots`` (a Tensor or a list) into the ``grad`` of the leaves, each
    root seeded with its entry of ``grads`` (one per root; see Tensor.backward)."""
    roots = [roots] if isinstance(roots, Tensor) else list(roots)
    run(roots, _listed(grads), retain_graph or create_graph, create_graph)


def _listed(grads):
    """``grads`` as a list: one gradient (not a list or tuple) becomes a list of one."""
    if grads is None:
        return None
    return list(grads) if isinstance(grads, (list, tuple)) else [grads]


def grad(outputs, inputs, grad_outputs=None, create_graph=False, retain_graph=None,
         allow_unused=False):
    """The gradients of ``outputs`` (a Tensor or a list: their sum, each weighted by its
    ``grad_outputs``) with respect to ``inputs`` (a Tensor or a list), as Tensors.

    With ``create_graph=True`` the backward pass is recorded, so the results can be
    differentiated again (Hessian-vector products, d²u/dx²). ``retain_graph`` defaults to
    ``create_graph``. No ``grad`` attribute is touched. An input the outputs do not depend on
    is an error unless ``allow_unused`` (its gradient is then None); an input given twice
    gets its gradient at both places. ``grad_outputs`` has one entry per output (None for a
    scalar output) or is omitted when every output is a scalar.
    """
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    grad_outputs = _listed(grad_outputs)
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor):
            raise TypeError(f"grad: inputs[{i}] is a {type(t).__name__}, not a Tensor")
        if not t.requires_grad:
            raise RuntimeError(f"grad: inputs[{i}] does not require grad")
    retain = create_graph if retain_graph is None else retain_graph
    found = run(outputs, grad_outputs, retain, create_graph, inputs, where="grad")
    results = []
    for i, (t, g) in enumerate(zip(inputs, found)):
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"grad: inputs[{i}] was not used to compute the outputs "
                                   "(pass allow_unused=True to get None)")
            results.append(None)
        elif isinstance(g, Tensor):
            results.append(g)
        else:
            results.append(leaf(g, t.backend))
    return results[0] if single else results


# ---- the Tensor's method ---------------------------------------------------------------------

def tensor_backward(self, grad=None, retain_graph=False, create_graph=False):
    """Backpropagates from this tensor into the ``grad`` of every leaf that requires it.

    ``grad``: dObjective/dself (needed unless self is a scalar; 1 for a scalar). The graph
    is freed afterwards unless ``retain_graph`` (or ``create_graph``) is true; with
    ``create_graph`` the backward pass is itself recorded: each leaf's ``grad_tensor`` is its
    gradient as a Tensor that can be differentiated again (``grad`` holds its value).
    """
    run([self], None if grad is None else [grad], retain_graph or create_graph, create_graph)


def _install():
    tensor_backward.__name__, tensor_backward.__qualname__ = "backward", "Tensor.backward"
    Tensor.backward = tensor_backward


_install()
