"""How far pytorch_optimizer's LAMB, SM3 and Adafactor move from the papers' algorithms (the *-paper entries).

Prints, per problem and pair, the relative trajectory difference max_t ‖x_lib(t) − x_paper(t)‖ / max_t ‖x_paper(t)
− x_0‖ and both final losses: on analytic problems (one 1-D parameter, through the loop engine) and on a small
two-layer MLP regression (matrices and vectors: per-layer trust ratios, factored second moments).

    python benchmarks/bench_paper_variants.py [--steps 200]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from optbench.engines.loop import run_loop
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem

PAIRS = [("lamb(lr=0.01)", "lamb-paper(lr=0.01)"),
         ("lamb(lr=0.01, weight_decay=0.01)", "lamb-paper(lr=0.01, weight_decay=0.01)"),
         ("adafactor", "adafactor-paper"),
         ("adafactor(betas=(None, 0.999))", "adafactor-paper"),  # 0 until the β₂ cap binds (t ≥ 5624)
         ("sm3(lr=0.1, beta=0.9)", "sm3-paper(lr=0.1, beta=0.9)"),
         ("sm3(lr=0.1)", "sm3-paper(lr=0.1)")]
# dimension ≤ 3, where the loop engine records coordinates
PROBLEMS = ["rosenbrock", "valley(kappa=100)", "beale", "noisy-quadratic(dim=3)", "styblinski-tang(dim=3)"]


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max_t ‖a_t − b_t‖ / max_t ‖b_t − b_0‖ over trajectories [T, d]."""
    return float(np.linalg.norm(a - b, axis=1).max() / np.linalg.norm(b - b[0], axis=1).max())


def mlp_trajectory(spec: str, steps: int) -> tuple[np.ndarray, float]:
    """A 8-32-1 tanh MLP on fixed synthetic regression data, full batch, float64: flat parameters per step."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=gen, dtype=torch.float64)
    y = torch.sin(x @ torch.randn(8, 1, generator=gen, dtype=torch.float64))
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)).double()
    torch.manual_seed(1)
    for layer in (model[0], model[2]):
        layer.reset_parameters()
    cfg = get_optimizer(spec)
    opt = cfg.entry.build(list(model.parameters()), cfg.hyperparams, dtype=torch.float64)
    flat = [torch.cat([p.detach().flatten() for p in model.parameters()]).numpy().copy()]
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        flat.append(torch.cat([p.detach().flatten() for p in model.parameters()]).numpy().copy())
    with torch.no_grad():
        return np.array(flat), float(torch.nn.functional.mse_loss(model(x), y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    steps = parser.parse_args().steps
    print(f"{'problem':<24} {'library':<42} {'rel. traj. diff':>15} {'loss lib':>11} {'loss paper':>11}")
    for library, paper in PAIRS:
        for problem_spec in PROBLEMS:
            problem = get_problem(problem_spec)
            a = run_loop(problem, get_optimizer(library), seed=0, steps=steps)
            b = run_loop(problem, get_optimizer(paper), seed=0, steps=steps)
            diff = relative_difference(a.coords[:, 0], b.coords[:, 0])
            print(f"{problem_spec:<24} {library:<42} {diff:>14.1%} {a.end_loss[0]:>11.4g} {b.end_loss[0]:>11.4g}")
        (a, loss_a), (b, loss_b) = mlp_trajectory(library, steps), mlp_trajectory(paper, steps)
        print(f"{'mlp 8-32-1':<24} {library:<42} {relative_difference(a, b):>14.1%} {loss_a:>11.4g} {loss_b:>11.4g}")


if __name__ == "__main__":
    main()
