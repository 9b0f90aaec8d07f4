"""Your own problems for optbench, in one file: ``optbench run -p examples/my_problem.py:FACTORY ...``.

A factory is any function (or class) whose keyword arguments with defaults are the problem's
hyperparameters (``-p "examples/my_problem.py:tilted_bowl(tilt=0.5)"``); it returns one of two shapes:

- ``optbench.AnalyticTask``: a batched loss on R^d (points ``[..., d]`` → losses ``[...]``), with an optional
  closed-form gradient, minima, plot bounds and a start. Two-dimensional ones get contour races in reports.
- ``optbench.TrainingTask``: a model factory, training and test data, a loss, test metrics, a default
  batch size and targets.

    optbench run -p examples/my_problem.py:tilted_bowl -o adam,sgd-momentum --steps 300 --report
    optbench run -p "examples/my_problem.py:two_moons(width=32)" -o adam,examples/my_optimizer.py:PlainSGD \\
        --epochs 5 --seeds 3 --report
"""

import math

import torch

from optbench import AnalyticTask, TrainingTask


def tilted_bowl(tilt: float = 0.5, kappa: float = 10.0) -> AnalyticTask:
    """f(x, y) = ½(x² + κ y²) + tilt·x: an ill-conditioned bowl with its minimum at (−tilt, 0)."""

    def loss(p):
        x, y = p[..., 0], p[..., 1]
        return 0.5 * (x**2 + kappa * y**2) + tilt * x

    def grad(p):
        x, y = p[..., 0], p[..., 1]
        return torch.stack([x + tilt, kappa * y], dim=-1)

    return AnalyticTask(loss=loss, grad=grad, dim=2, bounds=((-3.0, 3.0), (-3.0, 3.0)), start=(2.5, 2.0),
                        minima=((-tilt, 0.0),), f_min=-0.5 * tilt**2, target=1e-6,
                        formula="½(x² + κy²) + tilt·x")


def two_moons(width: int = 32, n_train: int = 512, n_test: int = 256, noise: float = 0.15) -> TrainingTask:
    """A two-layer MLP on two interleaved half circles (binary classification, cross-entropy)."""

    def moons(n, seed):
        g = torch.Generator().manual_seed(seed)
        angle = torch.rand(n, generator=g) * math.pi
        label = torch.randint(0, 2, (n,), generator=g)
        x = torch.stack([torch.cos(angle), torch.sin(angle)], 1)
        x = torch.where(label[:, None] == 1, torch.stack([1 - x[:, 0], 0.5 - x[:, 1]], 1), x)
        return x + noise * torch.randn(n, 2, generator=g), label

    def model():
        return torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Tanh(), torch.nn.Linear(width, 2))

    def accuracy(logits, y):
        return (logits.argmax(-1) == y).float().mean()

    return TrainingTask(model=model, train=moons(n_train, 0), test=moons(n_test, 1),
                        loss=torch.nn.functional.cross_entropy, metrics={"acc": accuracy}, batch_size=64,
                        target=0.1, result_target="test_acc>=0.95")
