"""The Optimizer base class: hyper-parameters, and PyTorch's interface over lists of parameters.

An optimizer is used in one of two ways.

- Over parameter Tensors, as in PyTorch: ``opt = Adam([*net.parameters(), lam], lr=1e-3)``,
  then ``opt.zero_grad(); L.backward(); opt.step()`` in a loop. Any leaf Tensor with
  ``requires_grad=True`` is a parameter (all of one backend and dtype); ``param_groups`` give
  parts of them their own hyper-parameters (``[{"params": [...], "lr": 1e-4}, ...]``), and
  ``state_dict()``/``load_state_dict()`` save and restore everything the next step depends on.
- As a rule with hyper-parameters only (``Adam(lr=1e-3)``), given to ``fit``, ``Trainer`` or
  an estimator, which make an ``OptimizerState`` over the MLP's arrays.

Either way the update of one parameter is the subclass's ``update``: the backend's in-place
kernel (``sgd_update``, ``adam_update``), and a step is finished by ``backprop.step``.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..step import finish_step
from ..tensor.core import Tensor, enable_grad
from .state import OptimizerState, deferred_sigint


def _is_number(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


class Optimizer:
    """Base class. ``hyperparameters``: the names a subclass takes (each an attribute holding
    the default, and a key of every parameter group); ``lr`` is read at every step, so a
    schedule may change it between steps."""

    name = "optimizer"
    full_batch = False
    hyperparameters = ("lr",)

    def __init__(self, params, **defaults):
        if _is_number(params):
            raise TypeError(
                f"{type(self).__name__}({params!r}, ...): the first argument is the parameters "
                f"(a list of Tensors, or None); give the learning rate as lr={params!r}")
        for key, value in self.check_hyper(dict(defaults)).items():
            object.__setattr__(self, key, value)
        self.param_groups = []
        self._states = {}          # id(parameter) -> its OptimizerState (slots and step count)
        self._backend = None       # the parameters' backend and dtype (one of each)
        self._dtype = None
        if params is not None:
            groups = _as_groups(params, type(self).__name__)
            for group in groups:
                self.add_param_group(group)

    # ---- hyper-parameters ---------------------------------------------------------------

    def check_hyper(self, hyper):
        """The hyper-parameters checked (a dict; each subclass checks its own)."""
        raise NotImplementedError

    def hyper(self):
        """The optimizer's own hyper-parameters (the defaults of its groups) as a dict."""
        return {key: getattr(self, key) for key in self.hyperparameters}

    def __setattr__(self, key, value):
        # opt.lr = x (a schedule) changes the default and the lr of every parameter group
        object.__setattr__(self, key, value)
        if key == "lr":
            for group in getattr(self, "param_groups", ()):
                group["lr"] = value

    def slots(self, hyper):
        """Names of the per-parameter buffers (each shaped like its parameter)."""
        return ()

    def update(self, backend, param, grad, slots, step, hyper):
        """One in-place update of the array ``param`` with ``grad`` (``step`` counts from 1)."""
        raise NotImplementedError

    def state(self, backend, params):
        """The per-parameter state this optimizer needs for the arrays ``params`` on
        ``backend`` (what ``fit`` and ``Trainer`` use for the MLP's arrays)."""
        return OptimizerState(self, backend, params)

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in self.hyper().items())
        groups = f", {len(self.param_groups)} parameter group(s)" if self.param_groups else ""
        return f"{type(self).__name__}({fields}{groups})"

    # ---- parameter lists (PyTorch's interface) -----------------------------------------

    def add_param_group(self, group):
        """Adds a group ``{"params": [Tensor, ...], <hyper-parameter>: value, ...}``; the
        hyper-parameters it leaves out take the optimizer's defaults."""
        where = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{where}: a parameter group is a dict with a 'params' list")
        unknown = sorted(set(group) - {"params"} - set(self.hyperparameters))
        if unknown:
            raise ValueError(f"{where}: unknown option(s) {unknown} in a parameter group; "
                             f"{where} takes {list(self.hyperparameters)}")
        params = _param_list(group["params"], where)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            self._check_param(p, i, where)
            if id(p) in seen:
                raise ValueError(f"{where}: the parameter {p!r} appears more than once (in one "
                                 "group or in two); give each parameter once")
            seen.add(id(p))
        hyper = self.check_hyper({**self.hyper(), **{k: v for k, v in group.items()
                                                       if k != "params"}})
        new = {"params": params, **hyper}
        self.param_groups.append(new)
        for p in params:
            # the kernels see every parameter as a vector (a view: 0-d and n-d alike)
            self._states[id(p)] = OptimizerState(self, self._backend, [p.value.reshape(-1)], new)

    def _check_param(self, p, i, where):
        if not isinstance(p, Tensor):
            raise TypeError(f"{where}: params[{i}] is a {type(p).__name__}, not a Tensor")
        if not p.is_leaf:
            raise ValueError(f"{where}: params[{i}] was made by the operation {p.op_name!r}; "
                             "a parameter must be a leaf Tensor (optimize the tensor it was "
                             "computed from)")
        if not p.requires_grad:
            raise ValueError(f"{where}: params[{i}] does not require grad; make it with "
                             "bp.Tensor(..., requires_grad=True)")
        if not p.value.flags.c_contiguous:
            raise ValueError(f"{where}: params[{i}]'s value is not a C-contiguous array")
        if self._backend is None:
            self._backend, self._dtype = p.backend, p.value.dtype
        elif p.backend is not self._backend:
            raise ValueError(f"{where}: parameters on two backends ({self._backend.name!r} and "
                             f"{p.backend.name!r}); one optimizer updates one backend's arrays")
        elif p.value.dtype != self._dtype:
            raise ValueError(f"{where}: parameters of two dtypes ({self._dtype} and "
                             f"{p.value.dtype}); give each dtype its own optimizer")

    def parameters(self):
        """Every parameter Tensor of every group, in order."""
        return [p for group in self.param_groups for p in group["params"]]

    def _need_params(self, what):
        if not self.param_groups:
            raise RuntimeError(f"{type(self).__name__}.{what}() needs parameters: make the "
                               f"optimizer with them, e.g. {type(self).__name__}(net.parameters(), "
                               "lr=...) (without parameters it is a rule for fit and Trainer)")

    def zero_grad(self, set_to_none=True):
        """Forgets every parameter's gradient (``set_to_none``), or fills it with zeros."""
        self._need_params("zero_grad")
        for p in self.parameters():
            if set_to_none:
                p.zero_grad()
            elif p.has_grad:
                p.grad.fill(0)

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns the closure's loss.

        ``closure()`` (optional) re-evaluates the objective: zero_grad, compute L, L.backward(),
        return L. A parameter without a gradient (``has_grad`` False: the loss did not use it
        since the last ``zero_grad``) is skipped, as in PyTorch: its value, slots and step
        count stay. A gradient that is NaN or infinite raises ``NonFiniteLossError`` before any
        parameter moves.
        """
        self._need_params("step")
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        backend = self._backend
        work = [(group, p) for group in self.param_groups for p in group["params"] if p.has_grad]
        grads = []
        for _, p in work:
            g = p.grad
            if tuple(g.shape) != tuple(p.value.shape):
                raise ValueError(f"{type(self).__name__}.step: a gradient of shape "
                                 f"{tuple(g.shape)} for a parameter of shape {p.shape}")
            if not g.flags.c_contiguous or g.dtype != p.value.dtype:
                g = backend.asarray(g, p.value.dtype)
            grads.append(g.reshape(-1))

        def update():
            with deferred_sigint():  # every parameter moves, or none
                for (group, p), g in zip(work, grads):
                    self._states[id(p)].advance(backend, [p.value.reshape(-1)], [g], group)

        finish_step(update, grads)
        return loss

    # ---- saving and restoring -------------------------------------------------------------

    def state_dict(self):
        """Everything the next step depends on, as plain values and numpy arrays:
        ``{"state": {i: {"step": t, <slot>: array}}, "param_groups": [{<hyper>..., "params":
        [i, ...]}]}`` with parameters numbered in group order (PyTorch's layout)."""
        self._need_params("state_dict")
        backend = self._backend
        state, groups, index = {}, [], 0
        for group in self.param_groups:
            numbers_ = []
            for p in group["params"]:
                s = self._states[id(p)]
                entry = {"step": s.step}
                entry.update({name: np.array(backend.to_numpy(buf)).reshape(p.shape)
                              for name, buf in s.slots[0].items()})
                state[index] = entry
                numbers_.append(index)
                index += 1
            groups.append({**{k: group[k] for k in self.hyperparameters}, "params": numbers_})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restores what ``state_dict`` saved, into an optimizer over parameters of the same
        shapes in the same groups; everything is checked before anything changes."""
        self._need_params("load_state_dict")
        where = f"{type(self).__name__}.load_state_dict"
        try:
            saved_groups, saved_state = state_dict["param_groups"], state_dict["state"]
        except (TypeError, KeyError):
            raise ValueError(f"{where}: expected a dict with 'state' and 'param_groups'") from None
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{where}: {len(saved_groups)} parameter groups saved, this "
                             f"optimizer has {len(self.param_groups)}")
        plan = []
        for k, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{where}: group {k} saved {len(saved['params'])} parameters, "
                                 f"this optimizer's has {len(group['params'])}")
            hyper = self.check_hyper({key: saved[key] for key in self.hyperparameters})
            for i, p in zip(saved["params"], group["params"]):
                entry = saved_state.get(i, saved_state.get(str(i)))
                s = self._states[id(p)]
                names = set(s.slots[0])
                if entry is None or set(entry) - {"step"} != names:
                    raise ValueError(f"{where}: parameter {i} has no saved state with slots "
                                     f"{sorted(names)}")
                for name in names:
                    if tuple(np.shape(entry[name])) != p.shape:
                        raise ValueError(f"{where}: parameter {i}'s {name} has shape "
                                         f"{tuple(np.shape(entry[name]))}, the parameter {p.shape}")
                plan.append((s, entry))
            plan.append((group, hyper))
        for target, values in plan:
            if isinstance(target, OptimizerState):
                target.step = int(values["step"])
                for name, buf in target.slots[0].items():
                    buf[...] = self._backend.asarray(np.asarray(values[name]).reshape(-1),
                                                     buf.dtype)
            else:
                target.update(values)


def _param_list(params, where):
    if isinstance(params, Tensor):
        raise TypeError(f"{where}: params must be a list of Tensors (or of parameter groups), "
                        "not one Tensor: write [t]")
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"{where}: params must be a list of Tensors; got "
                        f"{type(params).__name__}") from None
    if not params:
        raise ValueError(f"{where}: got an empty parameter list")
    return params


def _as_groups(params, where):
    """``params`` (Tensors, or dicts of parameter groups) as a list of group dicts."""
    params = _param_list(params, where)
    if all(isinstance(p, dict) for p in params):
        return params
    if any(isinstance(p, dict) for p in params):
        raise TypeError(f"{where}: give a list of Tensors or a list of parameter groups (dicts), "
                        "not both")
    return [{"params": params}]
