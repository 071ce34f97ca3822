"""An inverse problem: ``python examples/inverse_poisson.py [backend]``.

u''(x) = -λ π² sin(πx) on [-1, 1] with λ unknown (the true value is 1). From 50 noisy samples
of u = sin(πx), the network u_net and λ are learned together, minimizing

    mse(u_net(x_data), u_data) + mse(u_net''(x_f) + λ π² sin(π x_f), 0)

on 100 collocation points x_f: Adam, then L-BFGS, both over ``[*net.parameters(), lam]``.
λ ends about 5e-4 from 1 (the noise in the data sets that floor), in a few seconds on cpu.
"""

import sys

import numpy as np

import backprop as bp

backend = sys.argv[1] if len(sys.argv) > 1 else (
    "cpu" if "cpu" in bp.available_backends() else "numpy")

rng = np.random.default_rng(0)
x_data = rng.uniform(-1, 1, (50, 1))
u_data = np.sin(np.pi * x_data) + 0.01 * rng.normal(size=x_data.shape)  # noise std 0.01
x_f = np.linspace(-1, 1, 100).reshape(-1, 1)

X, U = bp.Tensor(x_data, backend=backend), bp.Tensor(u_data, backend=backend)
forcing = bp.Tensor(np.pi ** 2 * np.sin(np.pi * x_f), backend=backend)
zero = bp.Tensor(np.zeros_like(x_f), backend=backend)

net = bp.MLP([1, 20, 20, 1], activation="tanh", backend=backend, dtype="float64", seed=0)
lam = bp.Tensor(np.zeros(1), requires_grad=True, backend=backend)  # the unknown, from 0
params = [*net.parameters(), lam]


def objective():
    u, u_xx = net.derivatives(x_f, second=("xx",), names=("x",))
    return bp.mse(net(X), U) + bp.mse(u_xx + lam * forcing, zero)


adam = bp.optim.Adam(params, lr=3e-3)
for step in range(2000):
    adam.zero_grad()
    L = objective()
    L.backward()
    adam.step()
print(f"{backend}: after Adam   λ = {lam.numpy()[0]:.6f}  loss {float(L.numpy()):.3e}")

lbfgs = bp.optim.LBFGS(params, history_size=50, max_iter=1000, line_search_fn="strong_wolfe")


def closure():
    lbfgs.zero_grad()
    L = objective()
    L.backward()
    return L


lbfgs.step(closure)
print(f"{backend}: after L-BFGS λ = {lam.numpy()[0]:.6f}  loss {lbfgs.result.loss:.3e} "
      f"({lbfgs.result.n_iter} iterations: {lbfgs.result.reason})")

x = np.linspace(-1, 1, 201).reshape(-1, 1)
error = np.max(np.abs(net.predict(x) - np.sin(np.pi * x)))
print(f"max |u_net - sin(πx)| on [-1, 1]: {error:.2e}")
