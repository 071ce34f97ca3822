"""scikit-learn compatible estimators: ``MLPRegressor`` and ``MLPClassifier``.

They take scikit-learn's constructor parameters (names, defaults, stopping rule) and train a
``backprop.MLP`` on one of this library's backends. scikit-learn is optional: when it is
installed the estimators derive from its ``BaseEstimator`` and mixins (so ``clone``,
``Pipeline``, ``GridSearchCV`` and ``cross_val_score`` work) and use its input validation;
without it they still fit and predict numpy arrays.

The objective is scikit-learn's, on the backend's kernels:

    regressor:  L = ½ Σ_i w_i Σ_j (F_ij - Y_ij)² / Σ_i w_i              (identity output)
    classifier: L = -Σ_i w_i log p_i(y_i) / Σ_i w_i                       (softmax; one
                logistic output for two classes, as scikit-learn does)
    penalty:    + (alpha/2) Σ_l ||W_l||² / Σ_i w_i   (+ l1 Σ_l |W_l| / Σ_i w_i, this library's)

with w = sample_weight (times the class weights); without weights Σ_i w_i is the batch size.
The initial weights are scikit-learn's (uniform in ±sqrt(6 / (fan_in + fan_out)), 2 for
logistic), drawn from the same generator in the same order, so with the same random_state
both start from the same point and visit the rows in the same order.

When every row has the same weight (no sample_weight or class_weight, no dropout, one output
for the regressor) and the backend has a fused training step (cpu, cuda), an epoch of
minibatches is one native call for the full batches and one for the smaller last one
(``estimator_steps.FusedEpochs``); otherwise each batch runs the kernels below. Both give the same numbers.
The gradient of the weighted loss is taken by scaling the rows of G = dL/dF by w_i / Σ w,
then the ordinary backward pass. ``loss_curve_`` reports scikit-learn's value, whose squared
error is also averaged over the outputs (the two agree for one output).

``comm=`` (an mpi4py communicator) fits data-parallel over MPI, shard "take": every rank passes
the whole X, y (and sample_weight) and computes on its contiguous part of the training rows.
The ranks first agree (one allgather: every rank's check result, a digest of the data and the
parameters; rank 0's seed when random_state is None), the parameters are broadcast from rank 0,
then every step reduces [gradient, loss] with ONE Allreduce (``estimator_steps.ReducedSteps``; the kernel path,
never the fused epochs) and every rank applies the same update. The epoch loss, the stopping
rule and early stopping (the same split on every rank from the shared generator; the score on
the whole validation set, which every rank holds, without communication) are the same on every
rank. solver="lbfgs" reduces the full-batch gradient and loss inside its closure. An error
before the agreement is raised on every rank; one after it aborts every rank
(``backprop.distributed.guard_fit``). ``clone`` passes ``comm`` on by reference.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _checks
from ._estimator_base import HAVE_SKLEARN, BaseEstimator, ClassifierMixin, RegressorMixin
from .backends import available_backends
from .distributed import Distributed, guard_fit
from .estimator_losses import logistic, softmax_cross_entropy, squared_error
from .estimator_steps import ReducedSteps, agree_estimator
from .estimator_training import EstimatorTraining
from .model import MLP
from .standardize import Standardizer

ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "sigmoid": "sigmoid",
               "tanh": "tanh", "relu": "relu"}
SOLVERS = ("adam", "sgd", "lbfgs")
LEARNING_RATES = ("constant", "invscaling", "adaptive")


# ---- the estimators -------------------------------------------------------------------

class _BaseMLP(EstimatorTraining, BaseEstimator):
    """What the regressor and the classifier share: parameters, validation, the training loop."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="auto", dtype="float32", dropout=0.0, l1=0.0, standardize=False,
                 comm=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.dtype = dtype
        self.dropout = dropout
        self.l1 = l1
        self.standardize = standardize
        self.comm = comm

    def __sklearn_clone__(self):
        """scikit-learn's clone, with ``comm`` passed by reference: a communicator is a handle on
        a group of processes (copying one is the collective ``Dup``), and mpi4py can deep-copy
        only the predefined ones (COMM_WORLD, COMM_SELF), not ``Dup``/``Split`` results."""
        comm = getattr(self, "comm", None)
        if comm is None:
            return super().__sklearn_clone__()
        self.comm = None
        try:
            new = super().__sklearn_clone__()
        finally:
            self.comm = comm
        new.comm = comm
        return new

    # ---- parameter checks (at fit, as scikit-learn does) -------------------------------

    def _check_params(self):
        def number(name, low, high=None, low_open=False, integer=False):
            value = getattr(self, name)
            kinds = numbers.Integral if integer else numbers.Real
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}; "
                                 f"got {value!r}")
            if value < low or (low_open and value == low) or (high is not None and value >= high):
                bounds = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'})"
                raise ValueError(f"{name} must lie in {bounds}; got {value!r}")
            return value

        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, numbers.Integral) else list(sizes)
        if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers; got {self.hidden_layer_sizes!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {self.activation!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}; got {self.solver!r}")
        if self.learning_rate not in LEARNING_RATES:
            raise ValueError(f"learning_rate must be one of {LEARNING_RATES}; got {self.learning_rate!r}")
        if not (self.batch_size == "auto" or (isinstance(self.batch_size, numbers.Integral)
                                              and not isinstance(self.batch_size, bool)
                                              and self.batch_size >= 1)):
            raise ValueError(f"batch_size must be 'auto' or an integer >= 1; got {self.batch_size!r}")
        number("alpha", 0)
        number("learning_rate_init", 0, low_open=True)
        number("power_t", 0)
        number("max_iter", 1, integer=True)
        number("tol", 0)
        number("momentum", 0, 1.0 + 1e-12)
        number("validation_fraction", 0, 1, low_open=True)
        number("beta_1", 0, 1)
        number("beta_2", 0, 1)
        number("epsilon", 0, low_open=True)
        number("n_iter_no_change", 1, integer=True)
        number("max_fun", 1, integer=True)
        number("l1", 0)
        number("dropout", 0, 1)
        if self.dropout and self.solver == "lbfgs":
            raise ValueError("dropout needs a stochastic solver ('adam' or 'sgd'), not 'lbfgs'")
        _checks.check_dtype(self.dtype)
        backend = self.backend
        if backend == "auto":
            backend = "cpu" if "cpu" in available_backends() else "numpy"
        return [int(s) for s in sizes], backend

    # ---- input validation ------------------------------------------------------------

    def _validate_X(self, X, reset):
        if HAVE_SKLEARN:
            from sklearn.utils.validation import validate_data
            return validate_data(self, X, reset=reset, dtype=(np.float64, np.float32))
        X = _checks.check_inputs(X, np.asarray(X).shape[-1]) if np.ndim(X) == 2 else X
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"Expected 2D array, got shape {X.shape}")
        if reset:
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input.")
        return X

    def _validate_Xy(self, X, y, reset):
        if HAVE_SKLEARN:
            from sklearn.utils.validation import column_or_1d, validate_data
            X, y = validate_data(self, X, y, reset=reset, multi_output=True,
                                 dtype=(np.float64, np.float32), y_numeric=self._y_numeric)
            if y.ndim == 2 and y.shape[1] == 1:
                y = column_or_1d(y, warn=True)
            return X, y
        X = self._validate_X(X, reset)
        y = np.asarray(y)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}")
        return X, y

    def _sample_weight(self, sample_weight, X):
        if sample_weight is None:
            return np.ones(X.shape[0])
        if HAVE_SKLEARN:
            from sklearn.utils.validation import _check_sample_weight
            return _check_sample_weight(sample_weight, X, dtype=np.float64)
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim == 0:
            w = np.full(X.shape[0], float(w))
        if w.shape != (X.shape[0],) or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("sample_weight must be finite, non-negative, one per sample")
        return w

    # ---- fitting -----------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Trains from scratch (or from the last fit's parameters with warm_start=True)."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _initialize(self, sizes, backend, n_features, n_outputs, rng):
        act = ACTIVATIONS[self.activation]
        layers = [n_features, *sizes, n_outputs]
        self.model_ = MLP(layers, activation=act, init="xavier", backend=backend,
                          dtype=self.dtype, seed=0)
        # scikit-learn's initialization, drawn from the same generator in the same order:
        # W and b uniform in ±sqrt(factor / (fan_in + fan_out)), factor 2 for logistic, else 6
        factor = 2.0 if act == "sigmoid" else 6.0
        weights, biases = [], []
        for fan_in, fan_out in zip(layers[:-1], layers[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            weights.append(rng.uniform(-bound, bound, (fan_in, fan_out)))
            biases.append(rng.uniform(-bound, bound, fan_out))
        self.model_.set_params(weights, biases)
        self.n_layers_ = len(sizes) + 2
        self.n_outputs_ = n_outputs
        self.out_activation_ = self._out_activation
        self.loss_curve_ = []
        self.t_ = 0
        self._no_improvement_count = 0
        self.best_loss_ = np.inf
        self.validation_scores_ = None
        self.best_validation_score_ = None
        if self.solver == "lbfgs":
            self.best_loss_ = None

    def _fit(self, X, y, sample_weight, incremental):
        if self.comm is None:
            return self._fit_on(X, y, sample_weight, incremental)
        # an error before the ranks agreed is raised on every rank; one after it aborts them all
        return guard_fit(self._fit_on)(X, y, sample_weight, incremental, comm=self.comm)

    @property
    def _logs(self):
        """Whether this estimator prints its progress: ``verbose``, and with ``comm`` rank 0 only."""
        comm = getattr(self, "comm", None)
        return bool(self.verbose) and (comm is None or comm.Get_rank() == 0)

    def _fit_on(self, X, y, sample_weight, incremental, comm=None):
        sizes, backend = self._check_params()
        first = not hasattr(self, "model_")
        reset = first or (not self.warm_start and not incremental)
        X, y = self._validate_Xy(X, y, reset=reset)
        Y = self._encode_targets(y, incremental, reset)
        w = self._sample_weight(sample_weight, X) * self._class_weights(y)
        if not (w.sum() > 0):
            raise ValueError("sample_weight sums to zero: there is nothing to fit")
        if not reset and self.model_.layers[-1] != Y.shape[1]:
            raise ValueError(f"y has {Y.shape[1]} outputs; the fitted model has "
                             f"{self.model_.layers[-1]}")
        seed = None
        if comm is not None:
            seed = agree_estimator(self, comm, X, Y, w, reset, incremental)
        if not hasattr(self, "_rng") or reset:
            from numpy.random import RandomState
            rs = self.random_state
            if rs is None and seed is not None:
                rs = seed  # rank 0's: every rank draws the same weights, splits and orders
            self._rng = (rs if isinstance(rs, RandomState) else
                         RandomState(rs if rs is not None else None))
        rng = self._rng
        if reset:
            self._initialize(sizes, backend, X.shape[1], Y.shape[1], rng)
            if self.standardize:
                self.model_.standardizer = Standardizer().fit(X)
            self._optimizer_state = None
        steps = None
        if comm is not None:
            Distributed(comm).broadcast_params(self.model_)  # the same start on every rank
            steps = ReducedSteps(comm, self.model_)
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, Y, w, steps)
        else:
            self._fit_stochastic(X, Y, y, w, rng, incremental, steps)
        self._export_params()
        return self

    def _export_params(self):
        self.coefs_ = self.model_.weights
        self.intercepts_ = self.model_.biases

    # ---- prediction ------------------------------------------------------------------

    def _raw(self, X):
        """The network's output F for X (checked), as float64 on the host."""
        if HAVE_SKLEARN:
            from sklearn.utils.validation import check_is_fitted
            check_is_fitted(self, "model_")
        elif not hasattr(self, "model_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit first")
        X = self._validate_X(X, reset=False)
        return self.model_.predict(X).astype(np.float64)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y) (solvers 'adam' and 'sgd'); the optimizer state is kept."""
        if self.solver == "lbfgs":
            raise AttributeError("partial_fit is only available for stochastic optimizers; "
                                 "solver 'lbfgs' is not stochastic")
        return self._fit(X, y, sample_weight, incremental=True)


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor (squared error), scikit-learn's parameters.

    Attributes after fit: ``model_`` (the ``backprop.MLP``), ``coefs_``, ``intercepts_``,
    ``n_features_in_``, ``feature_names_in_`` (from a DataFrame), ``loss_``, ``loss_curve_``,
    ``best_loss_``, ``validation_scores_``, ``best_validation_score_``, ``n_iter_``, ``t_``,
    ``n_layers_``, ``n_outputs_``, ``out_activation_``.
    """

    _is_classifier = False
    _y_numeric = True
    _out_activation = "identity"
    _loss = staticmethod(squared_error)

    def _fused_loss(self, outputs):
        return ("mse", 2.0) if outputs == 1 else None

    def _encode_targets(self, y, incremental, reset):
        y = np.asarray(y, dtype=np.float64)
        if reset:
            self._y_ndim = y.ndim
        return y.reshape(-1, 1) if y.ndim == 1 else y

    def _class_weights(self, y):
        return 1.0

    def predict(self, X):
        """Predictions, shape (n,) for one output (as y was given) or (n, outputs)."""
        F = self._raw(X)
        return F.ravel() if F.shape[1] == 1 and getattr(self, "_y_ndim", 1) == 1 else F

    def _score_raw(self, X, y, w):
        if not HAVE_SKLEARN:
            return self.score(X, y, w)
        from sklearn.metrics import r2_score
        return r2_score(y, self.predict(X), sample_weight=w)

    if not HAVE_SKLEARN:  # pragma: no cover
        def score(self, X, y, sample_weight=None):
            y = np.asarray(y, dtype=np.float64)
            P = self.predict(X).reshape(y.shape)
            w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
            wr = w.reshape(-1, *([1] * (y.ndim - 1)))
            mean = (wr * y).sum(0) / w.sum()
            return float(np.mean(1 - (wr * (y - P) ** 2).sum(0) / (wr * (y - mean) ** 2).sum(0)))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier (cross-entropy), scikit-learn's parameters.

    Labels may be of any type (strings included). Two classes train one logistic output (as
    scikit-learn does), more train a softmax layer. ``class_weight``: None, "balanced" or a
    dict {label: weight}, multiplied into sample_weight.
    """

    _is_classifier = True
    _y_numeric = False

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 class_weight=None, backend="auto", dtype="float32", dropout=0.0, l1=0.0,
                 standardize=False, comm=None):
        super().__init__(hidden_layer_sizes, activation, solver=solver, alpha=alpha,
                         batch_size=batch_size, learning_rate=learning_rate,
                         learning_rate_init=learning_rate_init, power_t=power_t,
                         max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol,
                         verbose=verbose, warm_start=warm_start, momentum=momentum,
                         nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
                         validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
                         backend=backend, dtype=dtype, dropout=dropout, l1=l1,
                         standardize=standardize, comm=comm)
        self.class_weight = class_weight

    @property
    def _out_activation(self):
        return "logistic" if len(self.classes_) == 2 else "softmax"

    @property
    def _loss(self):
        return logistic if len(self.classes_) == 2 else softmax_cross_entropy

    def _fused_loss(self, outputs):
        return ("bce", 1.0) if outputs == 1 else ("cross_entropy", 1.0)

    def _encode_targets(self, y, incremental, reset):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D class labels; got shape {y.shape} (multi-label "
                             "targets are not supported)")
        if HAVE_SKLEARN:
            from sklearn.utils.multiclass import check_classification_targets
            check_classification_targets(y)
        classes = np.unique(y)
        if reset and not incremental:
            self.classes_ = classes
        else:
            unknown = np.setdiff1d(classes, self.classes_)
            if self.warm_start and not incremental and not np.array_equal(classes, self.classes_):
                raise ValueError("warm_start can only be used where `y` has the same classes as "
                                 f"in the previous call to fit. Previously got {self.classes_}, "
                                 f"`y` has {classes}")
            if len(unknown):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {classes}.")
        if len(self.classes_) < 2:
            raise ValueError("a classifier needs at least 2 classes in y; got 1 class: "
                             f"{self.classes_[0]!r}")
        index = np.searchsorted(self.classes_, y)
        if len(self.classes_) == 2:
            return index.reshape(-1, 1).astype(np.float64)
        Y = np.zeros((len(y), len(self.classes_)))
        Y[np.arange(len(y)), index] = 1.0
        return Y

    def _class_weights(self, y):
        cw = self.class_weight
        if cw is None:
            return 1.0
        y = np.asarray(y).ravel()
        if cw == "balanced":
            present, counts = np.unique(y, return_counts=True)
            table = dict(zip(present.tolist(), (len(y) / (len(present) * counts)).tolist()))
        elif isinstance(cw, dict):
            table = {k: float(v) for k, v in cw.items()}
            unknown = set(table) - set(self.classes_.tolist())
            if unknown:
                raise ValueError(f"class_weight names classes not in y: {sorted(map(str, unknown))}")
        else:
            raise ValueError(f"class_weight must be None, 'balanced' or a dict; got {cw!r}")
        return np.array([table.get(label, 1.0) for label in y.tolist()])

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch; the first call needs ``classes``, every label that will ever appear."""
        if not hasattr(self, "classes_") or not hasattr(self, "model_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self.classes_ = np.unique(np.asarray(classes))
            if hasattr(self, "model_"):
                del self.model_
        return super().partial_fit(X, y, sample_weight)

    def predict_proba(self, X):
        """Class probabilities, shape (n, n_classes), columns in the order of ``classes_``."""
        F = self._raw(X)
        if F.shape[1] == 1:
            return np.hstack([np.exp(-np.logaddexp(0, F)), np.exp(-np.logaddexp(0, -F))])
        Z = F - F.max(axis=1, keepdims=True)
        E = np.exp(Z)
        return E / E.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        F = self._raw(X)
        if F.shape[1] == 1:
            return np.hstack([-np.logaddexp(0, F), -np.logaddexp(0, -F)])
        Z = F - F.max(axis=1, keepdims=True)
        return Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))

    def predict(self, X):
        """The most probable class of each row (labels of the type y had)."""
        F = self._raw(X)
        index = (F[:, 0] > 0).astype(np.int64) if F.shape[1] == 1 else F.argmax(axis=1)
        return self.classes_[index]

    def _score_raw(self, X, y, w):
        return float(np.average(self.predict(X) == np.asarray(y), weights=w))

    if not HAVE_SKLEARN:  # pragma: no cover
        def score(self, X, y, sample_weight=None):
            return self._score_raw(X, y, sample_weight)
