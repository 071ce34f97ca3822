"""The estimators' training: epochs of minibatches (solvers "adam" and "sgd") with
scikit-learn's stopping rule and early stopping, and solver "lbfgs"; a mixin of the estimators.

Each minibatch step is the weighted gradient (``estimator_losses``), or its sum over MPI ranks
(``estimator_steps.ReducedSteps``), finished by ``backprop.step.finish_step``; with equal
weights on a backend that has one, an epoch is the fused native path (``FusedEpochs``).
"""

from __future__ import annotations

import warnings

import numpy as np

from ._estimator_base import HAVE_SKLEARN, ConvergenceWarning
from .estimator_losses import loss_and_grad, loss_and_grad_dropout
from .estimator_steps import FusedEpochs
from .fit_lbfgs import fit_lbfgs
from .optim import SGD, Adam
from .step import NonFiniteLossError, finish_step
from .trainer import Trainer


class EstimatorTraining:
    """The training methods of ``_BaseMLP`` (backprop.estimators): its state, the model
    ``model_`` and scikit-learn's fitted attributes, are the estimator's."""

    def _device(self, X, Y, w):
        net = self.model_
        Xd = net.input_array(X)
        Yd = net.backend.asarray(Y, net.dtype)
        wd = net.backend.asarray(w, np.float64)
        return Xd, Yd, wd

    def _make_optimizer(self, scale=1.0):
        """The optimizer for gradients ``scale`` times ours: the same updates (Adam is scale
        invariant once eps is scaled too; SGD's lr is divided by the scale)."""
        if self.solver == "adam":
            return Adam(lr=self.learning_rate_init, beta1=self.beta_1, beta2=self.beta_2,
                        eps=self.epsilon * scale)
        return SGD(lr=self.learning_rate_init / scale, momentum=self.momentum,
                   nesterov=bool(self.nesterovs_momentum and self.momentum > 0))

    def _fit_stochastic(self, X, Y, y, w, rng, incremental, steps=None):
        net = self.model_
        early_stopping = bool(self.early_stopping) and not incremental
        X_val = y_val = w_val = None
        if early_stopping:
            idx = np.arange(X.shape[0])
            if HAVE_SKLEARN:
                from sklearn.model_selection import train_test_split
                stratify = y if self._is_classifier else None
                tr, va = train_test_split(idx, random_state=rng,
                                          test_size=self.validation_fraction, stratify=stratify)
            else:  # a random split (not stratified)
                perm = rng.permutation(idx)
                n_val = max(1, int(np.ceil(self.validation_fraction * len(idx))))
                va, tr = perm[:n_val], perm[n_val:]
            X_val, y_val, w_val = X[va], y[va], w[va]
            X, Y, w = X[tr], Y[tr], w[tr]
            if self.validation_scores_ is None:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        n = X.shape[0]
        batch_size = min(200, n) if self.batch_size == "auto" else int(np.clip(self.batch_size, 1, n))
        if self.batch_size != "auto" and self.batch_size > n and not incremental:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                          "It is going to be clipped")
        dropout = self.dropout
        # the backend's fused epoch (cpu, cuda) computes the same objective when every row has
        # the same weight, up to a constant factor `scale` of the loss (see FusedEpochs)
        fused_loss = self._fused_loss(Y.shape[1])
        fused = None
        if (fused_loss is not None and not incremental and not dropout and steps is None
                and hasattr(net.backend, "make_trainer") and bool(np.all(w == w[0]))):
            name, scale = fused_loss
            fused = FusedEpochs(net, name, scale, self._make_optimizer(scale), self.alpha,
                                 self.l1, n, batch_size)
            self._optimizer_state = fused.state
        elif self._optimizer_state is None or not incremental:
            optimizer = self._make_optimizer()
            self._optimizer_state = optimizer.state(net.backend, net.params)
        state = self._optimizer_state
        optimizer = state.optimizer

        def apply_update():  # the optimizer's update of the model, after the step's checks
            state.apply(net.backend, net.params, net.grads)
        lr_scale = fused.scale if fused is not None and self.solver == "sgd" else 1.0
        self._fused_epochs = fused is not None
        masks_rng = np.random.default_rng(rng.randint(np.iinfo(np.int32).max)) if dropout else None
        trainer = None
        if dropout:
            trainer = Trainer(net, "mse", optimizer, dropout=dropout)
            trainer.rng = masks_rng
        loss = self._loss
        best = None
        with net.lock:
            Xd, Yd, wd = self._device(X, Y, w)
            if steps is not None:
                steps.take(n)  # this rank's rows of the training set: [steps.lo, steps.hi)
            self.n_iter_ = 0
            for _ in range(1 if incremental else self.max_iter):
                order = rng.permutation(n) if self.shuffle else np.arange(n)
                accumulated = 0.0
                if fused is not None:
                    accumulated = fused.epoch(Xd, Yd, net.backend.asarray(order, np.int64)
                                              if self.shuffle else None)
                for start in range(0, n if fused is None else 0, batch_size):
                    rows = order[start:start + batch_size]
                    if steps is not None:
                        reported = steps.step(net, Xd, Yd, w, rows, loss, self.alpha, self.l1,
                                              trainer)
                        finish_step(apply_update, net.grads, reported)
                        accumulated += reported * len(rows)
                        continue
                    if self.shuffle:
                        rows_d = net.backend.asarray(rows, np.int64)
                        Xb, Yb, wb = Xd[rows_d], Yd[rows_d], wd[rows_d]
                    else:
                        Xb, Yb, wb = (Xd[start:start + batch_size], Yd[start:start + batch_size],
                                      wd[start:start + batch_size])
                    if dropout:
                        _, reported = loss_and_grad_dropout(net, trainer, Xb, Yb, wb, loss,
                                                             self.alpha, self.l1)
                    else:
                        _, reported = loss_and_grad(net, Xb, Yb, wb, loss, self.alpha, self.l1)
                    try:
                        finish_step(apply_update, net.grads, reported)
                    except NonFiniteLossError:
                        raise FloatingPointError(
                            f"the loss became {reported} in iteration {self.n_iter_ + 1}; try a "
                            "smaller learning_rate_init") from None
                    accumulated += reported * len(rows)
                self.n_iter_ += 1
                self.loss_ = accumulated / n
                self.t_ += n
                self.loss_curve_.append(self.loss_)
                if self._logs:
                    print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
                best = self._update_no_improvement_count(early_stopping, X_val, y_val, w_val, best)
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    optimizer.lr = (self.learning_rate_init / (self.t_ + 1) ** self.power_t
                                    / lr_scale)
                if self._no_improvement_count > self.n_iter_no_change:
                    if self.solver == "sgd" and self.learning_rate == "adaptive" \
                            and optimizer.lr * lr_scale > 1e-6:
                        optimizer.lr /= 5.0
                        if self._logs:
                            print("Setting learning rate to %f" % (optimizer.lr * lr_scale))
                        self._no_improvement_count = 0
                    else:
                        if self._logs:
                            what = ("Validation score" if early_stopping else "Training loss")
                            print(f"{what} did not improve more than tol={self.tol:f} for "
                                  f"{self.n_iter_no_change} consecutive epochs. Stopping.")
                        break
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                                  "reached and the optimization hasn't converged yet.",
                                  ConvergenceWarning)
        if early_stopping and best is not None:
            net.set_params(*best)

    def _update_no_improvement_count(self, early_stopping, X_val, y_val, w_val, best):
        """scikit-learn's rule: count the epochs without an improvement of at least tol."""
        if early_stopping:
            score = self._score_raw(X_val, y_val, w_val)
            self.validation_scores_.append(score)
            if self._logs:
                print("Validation score: %f" % score)
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                best = (self.model_.weights, self.model_.biases)
            return best
        if self.loss_curve_[-1] > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if self.loss_curve_[-1] < self.best_loss_:
            self.best_loss_ = self.loss_curve_[-1]
        return best

    def _fit_lbfgs(self, X, Y, w, steps=None):
        net = self.model_
        with net.lock:
            Xd, Yd, wd = self._device(X, Y, w)
            loss, alpha, l1 = self._loss, self.alpha, self.l1
            reported = {}
            if steps is not None:
                steps.take(X.shape[0])
                everything = np.arange(X.shape[0])

            def closure():
                if steps is not None:  # the full batch's gradient: one allreduce
                    value, rep = steps.step(net, Xd, Yd, w, everything, loss, alpha, l1,
                                            both=True)
                else:
                    value, rep = loss_and_grad(net, Xd, Yd, wd, loss, alpha, l1)
                reported["loss"] = rep
                return value

            result = fit_lbfgs(net, closure, max_iter=self.max_iter, max_eval=self.max_fun,
                               tolerance_grad=self.tol)
        self.n_iter_ = result.n_iter
        self.loss_ = loss_and_grad(net, Xd, Yd, wd, loss, alpha, l1)[1]
        self.loss_curve_.extend(result.losses)
        self.best_loss_ = None
        self.t_ += X.shape[0]
        if not result.converged:
            warnings.warn(f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                          f"({result.reason}); increase max_iter or scale the data",
                          ConvergenceWarning)
