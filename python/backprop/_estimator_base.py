"""scikit-learn's BaseEstimator, mixins and ConvergenceWarning when it is installed, else
stand-ins (``HAVE_SKLEARN`` says which).

The stand-ins give ``get_params``/``set_params`` (from the constructor's signature) and a repr; the
estimators implement ``score`` themselves in that case.
"""

from __future__ import annotations

import inspect


class ConvergenceWarning(UserWarning):
    """The solver stopped at max_iter before meeting its tolerance."""


class BaseEstimator:
    @classmethod
    def _get_param_names(cls):
        signature = inspect.signature(cls.__init__)
        return sorted(p.name for p in signature.parameters.values()
                      if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; "
                                 f"valid parameters: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {p.name: p.default for p in
                    inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if defaults.get(k) != v]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self):  # only called by scikit-learn, which is absent here
        raise NotImplementedError


class RegressorMixin:
    _estimator_type = "regressor"


class ClassifierMixin:
    _estimator_type = "classifier"


try:  # scikit-learn is optional: its own classes replace the stand-ins when it is installed
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin  # noqa: F811
    from sklearn.exceptions import ConvergenceWarning  # noqa: F811
    HAVE_SKLEARN = True
except ImportError:  # pragma: no cover - exercised where scikit-learn is absent
    HAVE_SKLEARN = False
