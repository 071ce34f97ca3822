"""One model used from several threads gives the serial results; Ctrl-C during an optimizer
update lands after the update, so every parameter array moves together."""

import os
import signal
import threading

import numpy as np
import pytest

import backprop as bp
from backprop.optim import OptimizerState, deferred_sigint


def run_threads(target, n_threads, *args):
    errors = []

    def guarded(k):
        try:
            target(k, *args)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_threads_sharing_a_model_get_the_serial_results(backend):
    """Without the model's lock, 4 threads on this model got 10-20% of predictions wrong
    (the workspace of one batch size is shared); kernels release the GIL, so they overlap."""
    rng = np.random.default_rng(0)
    net = bp.MLP([16, 128, 128, 4], backend=backend, seed=0)
    Xs = [rng.normal(size=(100, 16)) for _ in range(160)]
    Ys = [rng.normal(size=(100, 4)) for _ in range(160)]
    serial_F = [net.predict(X) for X in Xs]
    serial_grads = {i: net.loss_and_grad(Xs[i], Ys[i], "mse") for i in range(0, 160, 8)}
    W, b = net.weights, net.biases
    wrong = []

    def work(k):
        for i in range(k, 160, 4):
            if not np.array_equal(net.predict(Xs[i]), serial_F[i]):
                wrong.append(("predict", i))
            if i in serial_grads:
                loss, grads = net.loss_and_grad(Xs[i], Ys[i], "mse")
                want_loss, want = serial_grads[i]
                if loss != want_loss or not all(np.array_equal(g, h) for g, h in
                                                zip(grads.weights + [grads.X], want.weights + [want.X])):
                    wrong.append(("loss_and_grad", i))
            if i % 20 == 0:
                net.set_params(W, b)  # the same values: results must not change
    run_threads(work, 4)
    assert not wrong, f"{len(wrong)} results differ from the serial ones: {wrong[:5]}"


def test_fit_in_one_thread_while_others_predict(backend):
    """Calls run one at a time: a prediction sees the parameters of a whole epoch, never a
    half-updated model, and fit's result equals fit run alone."""
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(64, 3)), rng.normal(size=(64, 1))
    alone = bp.MLP([3, 16, 1], backend=backend, seed=0)
    # sgd: the cpu backend's Adam rounds by buffer alignment, which would differ between models
    alone.fit(X, Y, optimizer="sgd", lr=0.05, epochs=40, batch_size=16, seed=0)
    net = bp.MLP([3, 16, 1], backend=backend, seed=0)
    done = threading.Event()

    def work(k):
        if k == 0:
            net.fit(X, Y, optimizer="sgd", lr=0.05, epochs=40, batch_size=16, seed=0)
            done.set()
        else:
            while not done.is_set():
                assert np.isfinite(net.predict(X[:7])).all()
    run_threads(work, 3)
    for got, want in zip(net.weights + net.biases, alone.weights + alone.biases):
        np.testing.assert_array_equal(got, want)


class InterruptedSGD(bp.optim.SGD):
    """SGD whose update of the second array sends this process SIGINT (a Ctrl-C)."""

    def __init__(self, lr):
        super().__init__(lr=lr)
        self.updates = 0

    def update(self, backend, param, grad, slots, step, hyper):
        super().update(backend, param, grad, slots, step, hyper)
        self.updates += 1
        if self.updates == 2:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # Python runs the handler at the next bytecodes
                pass


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals reach the main thread only")
def test_ctrl_c_during_an_update_lands_after_every_array_moved(backend):
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    net = bp.MLP([3, 5, 4, 2], backend=backend, dtype="float64", seed=0)
    before = net.weights + net.biases
    _, grads = net.loss_and_grad(X, Y, "mse")
    optimizer = InterruptedSGD(lr=0.1)
    trainer = bp.Trainer(net, "mse", optimizer, fused=False)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        trainer.step(net.input_array(X), net.target_array(Y, 8, "mse"))
    assert optimizer.updates == 6  # the interrupt came after the second of six arrays
    after = net.weights + net.biases
    for p0, g, p1 in zip(before, grads.weights + grads.biases, after):
        np.testing.assert_allclose(p1, p0 - 0.1 * g, rtol=1e-12, atol=1e-15)  # all moved
    assert trainer.state.step == 1
    assert signal.getsignal(signal.SIGINT) is handler  # the handler is put back


class InterruptedSGDOverParameters(InterruptedSGD):
    def __init__(self, params, lr):
        bp.optim.SGD.__init__(self, params, lr=lr)
        self.updates = 0


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals reach the main thread only")
def test_ctrl_c_during_opt_step_lands_after_every_parameter_moved(backend):
    net = bp.MLP([3, 5, 4, 2], backend=backend, dtype="float64", seed=0)
    before = net.weights + net.biases
    X = np.random.default_rng(2).normal(size=(8, 3))
    optimizer = InterruptedSGDOverParameters(net.parameters(), lr=0.1)
    (net(X) ** 2).sum().backward()
    grads = [np.array(net.backend.to_numpy(p.grad)) for p in net.parameters()]
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        optimizer.step()
    assert optimizer.updates == 6  # the interrupt came after the second of six arrays
    for p0, g, p1 in zip(before, grads[0::2] + grads[1::2], net.weights + net.biases):
        np.testing.assert_allclose(p1, p0 - 0.1 * g, rtol=1e-12, atol=1e-15)  # all moved
    assert signal.getsignal(signal.SIGINT) is handler


def test_deferred_sigint_hands_the_signal_to_the_previous_handler():
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        with deferred_sigint():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):
                pass
            assert received == []  # held back
        assert received == [signal.SIGINT]  # delivered on leaving the block
        with deferred_sigint():
            pass
        assert received == [signal.SIGINT]  # nothing recorded, nothing delivered
    finally:
        signal.signal(signal.SIGINT, previous)


def test_updates_off_the_main_thread_need_no_signal_handler():
    net = bp.MLP([2, 3, 1], dtype="float64", seed=0)
    state = OptimizerState(bp.optim.SGD(lr=0.5), net.backend, net.params)
    grads = [np.ones_like(p) for p in net.params]
    before = net.weights

    def work(k):
        state.apply(net.backend, net.params, grads)
    run_threads(work, 1)
    for p0, p1 in zip(before, net.weights):
        np.testing.assert_allclose(p1, p0 - 0.5)
    assert state.step == 1
