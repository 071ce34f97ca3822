"""An inverse problem: ``python examples/inverse_poisson.py [backend]``.

u''(x) = -λ π² sin(πx) on [-1, 1] with λ unknown (the true value is 1). From 50 noisy samples
of u = sin(πx), the network u_net and λ are learned together, minimizing

    mse(u_net(x_data), u_data) + mse(u_net''(x_f) + λ π² sin(π x_f), 0)

on 100 collocation points x_f: Adam, then L-BFGS, both over ``[*net.parameters(), lam]``.
λ ends about 5e-4 from 1 (the noise in the data sets that floor), in a few seconds on cpu.
tests/test_inverse.py runs ``solve`` at this size and at a reduced one.
"""

import sys

import numpy as np

import backprop as bp


def solve(backend, n_data=50, n_f=100, adam_steps=2000, lbfgs_iters=1000, seed=0):
    """Trains the network and λ; returns λ after Adam, λ at the end, the L-BFGS result, the
    prediction on a grid of [-1, 1] and every parameter's final values (numpy arrays)."""
    rng = np.random.default_rng(seed)
    x_data = rng.uniform(-1, 1, (n_data, 1))
    u_data = np.sin(np.pi * x_data) + 0.01 * rng.normal(size=x_data.shape)  # noise std 0.01
    x_f = np.linspace(-1, 1, n_f).reshape(-1, 1)

    def const(a):
        return bp.Tensor(a, backend=backend, dtype="float64")
    X, U = const(x_data), const(u_data)
    forcing, zero = const(np.pi ** 2 * np.sin(np.pi * x_f)), const(np.zeros((n_f, 1)))

    net = bp.MLP([1, 20, 20, 1], activation="tanh", backend=backend, dtype="float64", seed=seed)
    lam = bp.Tensor(np.zeros(1), requires_grad=True, backend=backend)  # the unknown, from 0
    params = [*net.parameters(), lam]

    def objective():
        u, u_xx = net.derivatives(x_f, second=("xx",), names=("x",))
        return bp.mse(net(X), U) + bp.mse(u_xx + lam * forcing, zero)

    adam = bp.optim.Adam(params, lr=3e-3)
    for _ in range(adam_steps):
        adam.zero_grad()
        objective().backward()
        adam.step()
    lam_adam = lam.item()

    lbfgs = bp.optim.LBFGS(params, history_size=50, max_iter=lbfgs_iters,
                           line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        L = objective()
        L.backward()
        return L
    lbfgs.step(closure)
    grid = np.linspace(-1, 1, 201).reshape(-1, 1)
    return {"lam_adam": lam_adam, "lam": lam.item(), "lbfgs": lbfgs.result, "grid": grid,
            "u": net.predict(grid), "params": [p.numpy() for p in params]}


if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else (
        "cpu" if "cpu" in bp.available_backends() else "numpy")
    out = solve(backend)
    result = out["lbfgs"]
    print(f"{backend}: after Adam   λ = {out['lam_adam']:.6f}")
    print(f"{backend}: after L-BFGS λ = {out['lam']:.6f}  loss {result.loss:.3e} "
          f"({result.n_iter} iterations: {result.reason})")
    error = np.max(np.abs(out["u"] - np.sin(np.pi * out["grid"])))
    print(f"max |u_net - sin(πx)| on [-1, 1]: {error:.2e}")
