"""Grad mode is per thread: ``no_grad`` and a backward pass in one thread never change what
another thread records, and the flag always comes back on."""

import sys
import threading

import numpy as np
import pytest

import backprop as bp

TIMEOUT = 60  # seconds: a thread that waits longer than this has failed


def _run_threads(targets):
    """Runs each target in its own thread; re-raises the first exception one of them raised."""
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 (handed to the main thread)
                errors.append(exc)
        return run
    threads = [threading.Thread(target=wrap(fn)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive(), "a thread did not finish"
    if errors:
        raise errors[0]


def test_no_grad_in_one_thread_leaves_another_recording():
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def sleeper():
        with bp.no_grad():
            inside.set()
            assert done.wait(TIMEOUT)
            seen["sleeper"] = bp.tensor.is_grad_enabled()

    def trainer():
        assert inside.wait(TIMEOUT)
        try:
            x = bp.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
            y = (x * x * x).sum()
            y.backward()
            seen["grad"] = x.grad.copy()
            seen["trainer"] = bp.tensor.is_grad_enabled()
        finally:
            done.set()
    _run_threads([sleeper, trainer])
    np.testing.assert_array_equal(seen["grad"], [3.0, 12.0, 27.0])
    assert seen["trainer"] is True
    assert seen["sleeper"] is False  # the other thread's backward did not turn it back on
    assert bp.tensor.is_grad_enabled()


def _gradients(backend, seed, X, Y):
    net = bp.MLP([1, 8, 1], backend=backend, dtype="float64", seed=seed)
    L = ((net(bp.Tensor(X, backend=backend)) - bp.Tensor(Y, backend=backend)) ** 2).mean()
    L.backward()
    return [np.array(net.backend.to_numpy(p.grad)) for p in net.parameters()]


@pytest.mark.parametrize("backend", bp.available_backends())
def test_two_threads_training_give_the_sequential_gradients(backend):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(32, 1))
    Y = np.sin(X)
    rounds = 200
    expected = {s: _gradients(backend, s, X, Y) for s in (1, 2)}
    got = {1: [], 2: []}
    start = threading.Barrier(2)

    def worker(seed):
        def run():
            start.wait(TIMEOUT)
            for _ in range(rounds):
                got[seed].append(_gradients(backend, seed, X, Y))
        return run
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # the threads take turns within each forward and backward
    try:
        _run_threads([worker(1), worker(2)])
    finally:
        sys.setswitchinterval(interval)
    for seed in (1, 2):
        assert len(got[seed]) == rounds
        for grads in got[seed]:
            assert len(grads) == len(expected[seed])
            for g, e in zip(grads, expected[seed]):
                np.testing.assert_array_equal(g, e)
    assert bp.tensor.is_grad_enabled()


class _Hold(bp.tensor.Function):
    """The identity, whose backward calls ``during`` (to wait on another thread) first."""

    name = "hold"

    def __init__(self, during):
        self.during = during

    def forward(self, x):
        return x.copy()

    def backward(self, g):
        self.during()
        return (g,)


def test_the_flag_comes_back_on_after_a_backward_that_raised():
    # in one thread: a backward that raises in the middle
    x = bp.Tensor(np.array([1.0, 2.0]), requires_grad=True)

    def fail():
        assert not bp.tensor.is_grad_enabled()  # a backward records nothing without create_graph
        raise ArithmeticError("in the middle")
    with pytest.raises(ArithmeticError, match="in the middle"):
        (_Hold(fail)(x) * 2.0).sum().backward()
    assert bp.tensor.is_grad_enabled()

    # across threads: one thread's backward raises while another thread's backward runs
    inside, release = threading.Event(), threading.Event()
    seen = {}

    def wait_then_fail():
        inside.set()
        assert release.wait(TIMEOUT)
        raise ArithmeticError("in the middle")

    def failing():
        a = bp.Tensor(np.array([1.0, 2.0]), requires_grad=True)
        try:
            _Hold(wait_then_fail)(a).sum().backward()
        except ArithmeticError:
            seen["failing"] = bp.tensor.is_grad_enabled()

    def let_it_fail():  # the other thread's backward raises and ends while this one runs
        release.set()
        worker.join(TIMEOUT)

    b = bp.Tensor(np.array([3.0]), requires_grad=True)
    Lb = (_Hold(let_it_fail)(b) * 3.0).sum()  # recorded before the other thread's backward
    worker = threading.Thread(target=failing)
    worker.start()
    try:
        assert inside.wait(TIMEOUT)
        Lb.backward()
        seen["grad"] = b.grad.copy()
        seen["other"] = bp.tensor.is_grad_enabled()
    finally:
        release.set()
        worker.join(TIMEOUT)
    assert seen["failing"] is True
    assert seen["other"] is True
    assert seen["grad"].tolist() == [3.0]
    assert bp.tensor.is_grad_enabled()


def test_no_grad_as_a_decorator_and_nested():
    @bp.no_grad()
    def predict(x):
        assert not bp.tensor.is_grad_enabled()
        return x * 2.0

    x = bp.Tensor(np.ones(2), requires_grad=True)
    assert not predict(x).requires_grad
    assert bp.tensor.is_grad_enabled()
    with bp.no_grad():
        with bp.tensor.enable_grad():
            assert (x * 2.0).requires_grad
        assert not (x * 2.0).requires_grad
        assert not predict(x).requires_grad
        assert not bp.tensor.is_grad_enabled()
    assert bp.tensor.is_grad_enabled()

    @bp.tensor.enable_grad()
    def record(x):
        return x * 2.0
    with bp.no_grad():
        assert record(x).requires_grad
    assert predict.__name__ == "predict"


def test_one_no_grad_object_shared_by_threads():
    ng = bp.no_grad()
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def first():
        with ng:
            inside.set()
            assert done.wait(TIMEOUT)
        seen["first"] = bp.tensor.is_grad_enabled()

    def second():
        assert inside.wait(TIMEOUT)
        with bp.no_grad():
            with bp.tensor.enable_grad():
                with ng:
                    seen["inner"] = bp.tensor.is_grad_enabled()
                seen["after"] = bp.tensor.is_grad_enabled()
        done.set()
    _run_threads([first, second])
    assert seen == {"inner": False, "after": True, "first": True}
