"""Input standardization (the vectorized-backprop seed's normalization): X -> (X - μ) / σ."""

from __future__ import annotations

import numpy as np

from . import _checks


class Standardizer:
    """Column means μ and standard deviations σ learned from training data.

        μ = (1/n) Σ_i X_i,    σ² = (1/n) Σ_i (X_i - μ)²,    transform(X) = (X - μ) / σ

    A column with σ = 0 (a constant feature) is only centred (σ taken as 1). Attach one to a
    model (``net.standardizer = bp.Standardizer().fit(X)``, or ``fit(..., standardize=True)``)
    and the model applies it to every X it is given, at training and at prediction.
    """

    def __init__(self):
        self.mean = None
        self.scale = None

    def fit(self, X):
        X = _checks.as_matrix(X, "X")
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"Standardizer.fit needs a non-empty 2-D X; got shape {tuple(X.shape)}")
        _checks.check_finite(X, "X")
        _checks.check_fits(X, np.float64, "X")
        X = np.asarray(X, dtype=np.float64)
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        scale = np.where(std > 0, std, 1.0)
        # columns so large that their mean or spread overflows float64 cannot be standardized
        _checks.check_finite(mean, "the column means of X")
        _checks.check_finite(scale, "the column standard deviations of X")
        self.mean, self.scale = mean, scale
        return self

    @classmethod
    def from_arrays(cls, mean, scale):
        """A Standardizer with the given column means and scales (copied; every scale a finite
        number > 0, as transform divides by it)."""
        mean = np.array(_checks.as_matrix(mean, "mean"), dtype=np.float64)  # copies
        scale = np.array(_checks.as_matrix(scale, "scale"), dtype=np.float64)
        if mean.ndim != 1 or mean.shape[0] == 0 or scale.shape != mean.shape:
            raise ValueError(f"Standardizer needs 1-D mean and scale of one length; got shapes "
                             f"{mean.shape} and {scale.shape}")
        _checks.check_finite(mean, "standardizer mean")
        _checks.check_finite(scale, "standardizer scale")
        if not bool((scale > 0).all()):
            bad = int(np.argmax(~(scale > 0)))
            raise ValueError(f"standardizer scale must be > 0 in every column; got {scale[bad]} "
                             f"at index [{bad}]")
        obj = cls()
        obj.mean, obj.scale = mean, scale
        return obj

    def copy(self):
        """An independent copy (its own arrays)."""
        obj = type(self)()
        if self.mean is not None:
            obj.mean, obj.scale = self.mean.copy(), self.scale.copy()
        return obj

    def _fitted(self):
        if self.mean is None:
            raise RuntimeError("this Standardizer has not been fitted: call fit(X) first")

    def transform(self, X):
        self._fitted()
        if X.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"X has {X.shape[-1]} columns; the Standardizer was fitted on "
                             f"{self.mean.shape[0]}")
        return (np.asarray(X, dtype=np.float64) - self.mean) / self.scale

    def inverse_transform(self, Z):
        self._fitted()
        return np.asarray(Z, dtype=np.float64) * self.scale + self.mean

    def __repr__(self):
        return "Standardizer()" if self.mean is None else f"Standardizer(features={self.mean.shape[0]})"
