"""An optimizer's per-parameter state (its slots and step count), updated all or nothing.

``OptimizerState`` holds, for a list of parameter arrays on one backend, the zero-initialized
buffers the update rule needs (momentum's velocity, Adam's m and v) and the count of updates
applied; ``apply`` runs the rule's update on every array in place. Ctrl-C during an update is
held back until every array has moved (``deferred_sigint``).
"""

from __future__ import annotations

import signal
import threading


class deferred_sigint:
    """A context manager that holds back Ctrl-C (SIGINT) until the end of its block.

    In the main thread it installs a handler that only records the signal, and on leaving the
    block puts the previous handler back and hands it the recorded signal (Python's default one
    raises KeyboardInterrupt there). Off the main thread, or when the previous handler was not
    installed from Python, it does nothing: signals are delivered to the main thread only.
    """

    __slots__ = ("previous", "received")

    def __enter__(self):
        self.previous, self.received = None, None
        if threading.current_thread() is not threading.main_thread():
            return self
        previous = signal.getsignal(signal.SIGINT)
        if previous is None:
            return self
        try:
            signal.signal(signal.SIGINT, self._hold)
        except (ValueError, OSError):  # not the main interpreter
            return self
        self.previous = previous
        return self

    def _hold(self, signum, frame):
        self.received = frame

    def __exit__(self, *exc):
        previous = self.previous
        if previous is None:
            return False
        self.previous = None
        signal.signal(signal.SIGINT, previous)
        if self.received is not None:
            frame, self.received = self.received, None
            if callable(previous):
                previous(signal.SIGINT, frame)
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)
        return False



class OptimizerState:
    """Zero-initialized slots (one buffer per slot per parameter) and the step counter.

    ``step`` counts the updates applied (Adam's t of the last update). It grows here, in
    ``apply``, on the kernel path, and in ``Trainer`` after a fused call. ``hyper``: the
    hyper-parameters of a parameter group (a dict); None reads the optimizer's own.
    """

    def __init__(self, optimizer, backend, params, hyper=None):
        self.optimizer = optimizer
        self.step = 0
        names = optimizer.slots(optimizer.hyper() if hyper is None else hyper)
        self.slots = [{name: backend.zeros(p.shape, p.dtype) for name in names} for p in params]

    def apply(self, backend, params, grads, hyper=None):
        """One update of every parameter with its gradient, in place, all or nothing.

        Ctrl-C during the update is held back until every array has moved (``deferred_sigint``),
        so an interrupt never leaves some parameters one step ahead of the others.
        """
        with deferred_sigint():
            self.advance(backend, params, grads, hyper)

    def advance(self, backend, params, grads, hyper=None):
        """``apply`` without holding back Ctrl-C, for a caller that holds it back around the
        updates of several states at once (``Optimizer.step``)."""
        hyper = self.optimizer.hyper() if hyper is None else hyper
        self.step += 1
        for param, grad, slots in zip(params, grads, self.slots):
            self.optimizer.update(backend, param, grad, slots, self.step, hyper)
