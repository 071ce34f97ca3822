"""Training with L-BFGS: ``fit(..., optimizer="lbfgs")`` and the estimators' solver="lbfgs".

Full batch: one epoch is one L-BFGS iteration (its line search may evaluate the loss several
times); the gradient of every evaluation is ``MLP.compute_gradients``, and the iterations are
``backprop.optim.LBFGS``'s.
"""

from __future__ import annotations

from . import _checks
from .fit_hooks import History
from .optim import LBFGS
from .standardize import Standardizer
from .step import NonFiniteLossError, step_loss


def fit_lbfgs(net, closure, max_iter=100, max_eval=15000, tolerance_grad=1e-7,
              tolerance_change=None):
    """One L-BFGS minimization as scikit-learn's solver="lbfgs" runs it (gtol = tol)."""
    opt = LBFGS(max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                tolerance_change=1e-9 if tolerance_change is None else tolerance_change)
    return opt.minimize(net, closure)


def fit_mlp(net, X, Y, loss="mse", optimizer="lbfgs", lr=None, epochs=100, l1=0.0, l2=0.0,
            validation_data=None, standardize=False, verbose=False):
    """``MLP.fit`` with L-BFGS: full batch, one epoch = one L-BFGS iteration (its line search
    may evaluate the loss several times). ``optimizer``: "lbfgs" (lr = 1, ``epochs``
    iterations) or an ``LBFGS`` (its own lr and max_iter). Returns a History."""
    loss = _checks.check_loss(loss)
    epochs = _checks.check_count(epochs, "epochs", 0)
    l1 = _checks.check_rate(l1, "l1")
    l2 = _checks.check_rate(l2, "l2")
    if isinstance(optimizer, LBFGS) and optimizer.param_groups:
        raise ValueError("this LBFGS was made over parameter Tensors; fit takes the rule alone "
                         "(LBFGS(max_iter=...)), or call its step(closure) yourself")
    opt = optimizer if isinstance(optimizer, LBFGS) else LBFGS(max_iter=max(epochs, 1))
    history = History()
    with net.lock:
        standardizer = None
        if standardize:
            standardizer = Standardizer().fit(_checks.check_inputs(X, net.layers[0]))
        X_dev = net.input_array(X, standardizer)
        Y_dev = net.target_array(Y, X_dev.shape[0], loss)
        X_val = Y_val = None
        if validation_data is not None:
            X_val = net.input_array(validation_data[0], standardizer)
            Y_val = net.target_array(validation_data[1], X_val.shape[0], loss)
        if standardizer is not None:
            net.standardizer = standardizer
        if epochs == 0 and not isinstance(optimizer, LBFGS):
            return history

        def closure():
            return step_loss(net.compute_gradients(X_dev, Y_dev, loss, l1, l2))

        def callback(iteration, value):
            history.loss.append(value)
            history.lr.append(opt.lr)
            if X_val is not None:
                val, _ = net.backend.loss(loss, net.forward(X_val), Y_val)
                history.val_loss.append(float(val))
            if verbose:
                print(f"lbfgs iteration {iteration}: loss {value:.6g}")

        result = opt.minimize(net, closure, callback=callback)
        if result.reason == "the loss is not finite":
            raise NonFiniteLossError(f"the loss is {result.loss} in L-BFGS iteration "
                                     f"{result.n_iter}")
    history.stopped_epoch = result.n_iter
    history.lbfgs = result
    return history
