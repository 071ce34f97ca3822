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
        X = np.asarray(X, dtype=np.float64)
        self.mean = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale = np.where(std > 0, std, 1.0)
        return self

    @classmethod
    def from_arrays(cls, mean, scale):
        obj = cls()
        obj.mean = np.asarray(mean, dtype=np.float64)
        obj.scale = np.asarray(scale, dtype=np.float64)
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
