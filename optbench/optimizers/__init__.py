"""Optimizers: library classes (torch.optim, pytorch_optimizer and its whole catalogue), hand-written ones and user
classes."""

from optbench.optimizers.registry import (
    OPTIMIZERS,
    OptimizerConfig,
    OptimizerEntry,
    get_optimizer,
    get_optimizer_entry,
    list_optimizers,
    register_optimizer,
)


def _register_catalogue() -> None:
    from optbench.optimizers.catalogue import catalogue_entries

    for entry in catalogue_entries(dict(OPTIMIZERS)):
        register_optimizer(entry)


_register_catalogue()

__all__ = ["OPTIMIZERS", "OptimizerConfig", "OptimizerEntry", "get_optimizer", "get_optimizer_entry",
           "list_optimizers", "register_optimizer"]
