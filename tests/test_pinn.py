"""The physics-informed examples (backprop.pinn) at reduced size, their CLI and the Burgers
reference solution."""

import numpy as np
import pytest

import backprop as bp
from backprop import cli, pinn


# ---- the Cole–Hopf reference -------------------------------------------------------------------

def test_burgers_reference_satisfies_the_pde():
    u = pinn.burgers_reference
    x = np.linspace(-0.9, 0.9, 13)
    h, k = 1e-4, 1e-5
    for t in (0.1, 0.4, 0.7, 0.95):
        u_t = (u(x, t + k) - u(x, t - k)) / (2 * k)
        u_x = (u(x + h, t) - u(x - h, t)) / (2 * h)
        u_xx = (u(x + h, t) - 2 * u(x, t) + u(x - h, t)) / h ** 2
        residual = u_t + u(x, t) * u_x - pinn.NU * u_xx
        scale = max(np.abs(u_t).max(), np.abs(u(x, t) * u_x).max(), 1.0)
        assert np.abs(residual).max() < 1e-5 * scale, t


def test_burgers_reference_initial_and_boundary_conditions():
    x = np.linspace(-1, 1, 41)
    assert np.allclose(pinn.burgers_reference(x, 0.0), -np.sin(np.pi * x), atol=1e-14)
    assert np.allclose(pinn.burgers_reference(x, 1e-6), -np.sin(np.pi * x), atol=1e-4)
    t = np.linspace(0, 1, 11)
    assert np.abs(pinn.burgers_reference(-1.0, t)).max() < 1e-12
    assert np.abs(pinn.burgers_reference(1.0, t)).max() < 1e-12
    # odd in x; the steepest slope, at x = 0 and t = 1.6037/π, is -152.00516 (Basdevant et al.,
    # Computers & Fluids 14, 1986)
    assert np.allclose(pinn.burgers_reference(-x, 0.5), -pinn.burgers_reference(x, 0.5), atol=1e-12)
    h, t_max = 1e-6, 1.6037 / np.pi
    slope = (pinn.burgers_reference(h, t_max) - pinn.burgers_reference(-h, t_max)) / (2 * h)
    assert abs(slope + 152.00516) < 1e-3


# ---- training at reduced size ------------------------------------------------------------------

@pytest.mark.parametrize("name", pinn.PROBLEMS)
def test_each_example_loss_decreases(name):
    problem = pinn.make(name, n_f=200, seed=0)
    net = problem.network(backend="numpy", seed=0)
    out = pinn.train(problem, net, adam_steps=15, lbfgs_iters=4)
    assert np.isfinite(out["final"])
    assert out["after_adam"] < out["initial"]
    assert out["final"] < out["after_adam"]


def test_sampling():
    rng = np.random.default_rng(0)
    X = pinn.sample(50, [-1, 0], [1, 1], rng, "lhs")
    assert X.shape == (50, 2) and X[:, 0].min() >= -1 and X[:, 0].max() <= 1
    # one point per stratum of each coordinate
    assert sorted(np.floor((X[:, 0] + 1) / 2 * 50).astype(int)) == list(range(50))
    assert sorted(np.floor(X[:, 1] * 50).astype(int)) == list(range(50))
    with pytest.raises(ValueError, match="sampling"):
        pinn.sample(5, [0], [1], rng, "sobol")


def test_default_backend_is_a_documented_choice():
    backend, why = pinn.default_backend()
    assert backend in ("numpy", "cpu") and why
    assert pinn.lacks_taylor("numpy") is None


# ---- the fast path against the recorded path ---------------------------------------------------

def test_burgers_residual_node_equals_recorded():
    problem = pinn.Burgers(n_f=40, seed=1)
    net = problem.network(backend="numpy", dtype="float64", seed=2)
    r_node = problem.residual(net, problem.Xf)
    r_rec = pinn.burgers_residual_recorded(net, problem.Xf)
    a, b = r_node.numpy(), r_rec.numpy()
    assert np.abs(a - b).max() <= 1e-12 * np.abs(b).max()

    def grads(residual):
        params = net.parameters()
        for p in params:
            p.zero_grad()
        (residual(net, problem.Xf) ** 2).mean().backward()
        return [np.array(p.grad) for p in params]

    for g, h in zip(grads(problem.residual), grads(pinn.burgers_residual_recorded)):
        assert np.abs(g - h).max() <= 1e-10 * max(np.abs(h).max(), 1e-30)


# ---- the command line --------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["pinn", "burgers", "--adam-steps", "-1"], "--adam-steps must be >= 0"),
    (["pinn", "burgers", "--lbfgs-iters", "-3"], "--lbfgs-iters must be >= 0"),
    (["pinn", "burgers", "--collocation", "0"], "--collocation must be >= 1"),
    (["pinn", "burgers", "--backend", "nope"], "unknown backend 'nope'"),
    (["pinn", "heat"], "invalid choice: 'heat'"),
    (["pinn", "burgers", "--collocation", "many"], "invalid int value"),
])
def test_cli_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "error:" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_cli_backend_without_the_kernels(capsys):
    if bp.why_unavailable("cpu") is not None or pinn.lacks_taylor("cpu") is None:
        pytest.skip("needs a cpu backend without the Taylor kernels")
    with pytest.raises(SystemExit) as exc:
        cli.main(["pinn", "poisson1d", "--backend", "cpu"])
    assert exc.value.code == 2
    assert "does not implement" in capsys.readouterr().err


def test_cli_runs_at_reduced_size(capsys):
    assert cli.main(["pinn", "poisson1d", "--backend", "numpy", "--adam-steps", "5",
                     "--lbfgs-iters", "2", "--collocation", "30"]) == 0
    out = capsys.readouterr().out
    assert "relative L2 error" in out and "backend 'numpy'" in out


# ---- the benchmark ------------------------------------------------------------------------------

def test_bench_pinn_rows_share_weights_and_points():
    from backprop import bench_pinn
    result = bench_pinn.run(collocation=(60,), repeat=1, min_time=0.0, settle=0.0, log=lambda s: None)
    rows = result["rows"]
    names = [r["row"] for r in rows]
    assert "backprop taylor numpy" in names and "backprop recorded numpy" in names
    base = rows[0]["initial_loss"]
    for r in rows:  # float32: the same loss before the first step, in every implementation
        assert abs(r["initial_loss"] - base) <= 1e-4 * base, r["row"]
        assert r["ms_per_step"] > 0
    assert "taylor" in bench_pinn.format_table(result)


def test_readme_burgers_example():
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("### Burgers' equation, and the `backprop pinn` examples")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) < 30
    small = (code.replace("sample(10000,", "sample(200,").replace("range(1000)", "range(3)")
             .replace("max_iter=20000", "max_iter=2"))
    assert small.count("200,") >= 1 and "range(3)" in small and "max_iter=2)" in small
    scope = {}
    exec(compile(small, "README.md", "exec"), scope)
    assert np.isfinite(scope["error"])
