"""Device names: ``auto`` resolved per problem kind, explicit choices validated against this machine."""

from __future__ import annotations

from optbench.errors import UsageError


def problem_device(name: str, problem) -> str:
    """The device a problem's runs use: ``auto`` keeps analytic problems on the CPU (their tensors are
    tiny, so kernel launches would dominate on an accelerator) and sends networks to CUDA/MPS if present."""
    if name == "auto" and problem.kind == "analytic":
        return "cpu"
    return resolve_device(name)


def resolve_device(name: str) -> str:
    """'auto' → cuda if available, else mps, else cpu; validates explicit choices."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cpu":
        return "cpu"
    if name.startswith("cuda"):
        from optbench.executors import DEVICES_ON_WORKERS

        if DEVICES_ON_WORKERS.get() and (name == "cuda" or name[5:].isdigit() and name[4] == ":"):
            return name  # each worker's own device (optbench.executors.dask checks it there)
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA device is available here; use --device cpu or auto.")
        if ":" in name:
            try:
                index = int(name.split(":", 1)[1])
            except ValueError:
                raise UsageError(f"--device {name!r}: expected cuda:N with N a device index.") from None
            if not 0 <= index < torch.cuda.device_count():
                raise UsageError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices "
                                 f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}).")
        return name
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError("--device mps: no Apple MPS device is available here; use --device cpu or auto.")
        return "mps"
    raise UsageError(f"Unknown device {name!r}; valid: auto, cpu, cuda, cuda:N, mps.")
