"""Optimizers: library classes (torch.optim, pytorch_optimizer), hand-written ones and user classes."""

from optbench.optimizers.registry import (
    OPTIMIZERS,
    OptimizerConfig,
    OptimizerEntry,
    get_optimizer,
    get_optimizer_entry,
    list_optimizers,
    register_optimizer,
)

__all__ = ["OPTIMIZERS", "OptimizerConfig", "OptimizerEntry", "get_optimizer", "get_optimizer_entry",
           "list_optimizers", "register_optimizer"]
