"""Suite files: a whole benchmark in one TOML file → :class:`optbench.sweep.spec.Sweep` objects.

Format (documented in docs/suites.md)::

    name = "ci"
    description = "fast regression set"

    [[sweep]]                          # one or more; keys mirror `optbench run`
    problems = ["rosenbrock", "valley(kappa=100)"]
    optimizers = ["adam", "sgd-momentum(momentum=0.8)"]
    lr = [1e-3, 1e-2]                  # or "1e-4:1:10" (log grid); absent: each optimizer's own
    seeds = 3                          # int → 0..N-1, or a list of ints
    steps = 500
    batch_size = [1, 8]                # problems with a batch size only
    engine = "auto"; device = "cpu"; dtype = "float64"; record_every = 10

    [tune]                             # optional, for `optbench tune --suite`
    trials = 50; protocol = "tpe"; space = "lr=1e-5:10:log"; seeds = 5; steps = 200
    schedule = "warmup-cosine"         # one schedule for every trial; space can search its parameters

    [check]                            # optional, passed through untouched to `optbench check`

The keys of a ``[[sweep]]`` are the fields of :class:`optbench.sweep.spec.Sweep` (``lrs`` written ``lr``,
``batch_sizes`` ``batch_size``, ``schedules`` ``schedule``), so a new field is a suite key and, through
``optbench run``'s generated option table, a command-line override (:func:`run_suite` ``overrides``).

Every problem of a sweep, every optimizer and every value is validated when the file is loaded; a bad
key or value is reported as ``FILE:LINE: key: message`` before any work starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package
    import tomli as tomllib

from optbench.errors import OptbenchError, UsageError, suggest

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

TOP_KEYS = ("name", "description", "sweep", "tune", "check")
TUNE_KEYS = ("problems", "optimizers", "trials", "protocol", "space", "seeds", "steps", "batch", "storage",
             "schedule")


@dataclass
class Suite:
    name: str
    description: str
    sweeps: list[Any]  # list[optbench.sweep.spec.Sweep]
    tune: dict[str, Any] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


class _Locator:
    """Finds the line of a key inside the n-th ``[table]`` / ``[[array]]`` of a TOML text (1-based)."""

    def __init__(self, text: str):
        self.lines = text.splitlines()

    def header(self, table: str | None, index: int = 0) -> int:
        if table is None:
            return 1
        pattern = re.compile(r"^\s*\[\[?\s*" + re.escape(table) + r"\s*\]\]?\s*(#.*)?$")
        seen = -1
        for i, line in enumerate(self.lines):
            if pattern.match(line):
                seen += 1
                if seen == index:
                    return i + 1
        return 1

    def key(self, table: str | None, index: int, key: str) -> int:
        begin = self.header(table, index) if table else 0  # first line after the header (0-based)
        key_re = re.compile(r"^\s*(?:\"" + re.escape(key) + r"\"|" + re.escape(key) + r")\s*=")
        for i in range(begin, len(self.lines)):
            if re.match(r"^\s*\[", self.lines[i]):
                break  # the next table starts: the key is not written in this one
            if key_re.match(self.lines[i]):
                return i + 1
        return begin if table else 1


class _Reporter:
    def __init__(self, path: Path, text: str):
        self.path, self.loc = path, _Locator(text)

    def error(self, table: str | None, index: int, key: str | None, message: str) -> UsageError:
        line = self.loc.key(table, index, key) if key else self.loc.header(table, index)
        where = f"[[{table}]] #{index + 1}" if table == "sweep" else (f"[{table}]" if table else "top level")
        what = f"{key}: " if key else ""
        return UsageError(f"{self.path}:{line}: {where}: {what}{message}")


def _unknown(rep: _Reporter, table: str | None, index: int, data: dict, allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise rep.error(table, index, key, f"unknown key.{suggest(key, allowed)} Valid keys: "
                            f"{', '.join(allowed)}.")


def _str_list(rep, table, index, key, value) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise rep.error(table, index, key, f"expected a non-empty list of spec strings, got {value!r}.")
    return value


def _int(rep, table, index, key, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise rep.error(table, index, key, f"expected an integer >= {minimum}, got {value!r}.")
    return value


def _seeds(rep, table, index, value) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return list(range(_int(rep, table, index, "seeds", value)))
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                 for v in value):
        if len(set(value)) != len(value):
            raise rep.error(table, index, "seeds", f"seeds are listed twice in {value!r}.")
        return list(value)
    raise rep.error(table, index, "seeds", f"expected a count N (seeds 0..N-1) or a list of seeds >= 0, "
                    f"got {value!r}.")


def _lrs(rep, table, index, value) -> list[float]:
    from optbench.spec import parse_float_list

    if isinstance(value, str):
        try:
            lrs = parse_float_list(value, "lr")
        except OptbenchError as exc:
            raise rep.error(table, index, "lr", str(exc)) from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        lrs = [float(value)]
    elif isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in value):
        lrs = [float(v) for v in value]
    else:
        raise rep.error(table, index, "lr", f"expected a list of numbers or a log grid 'LOW:HIGH:N', got {value!r}.")
    if any(v <= 0 for v in lrs):
        raise rep.error(table, index, "lr", f"learning rates must be > 0, got {value!r}.")
    return lrs


def _choice(rep, table, index, key, value, choices) -> str:
    if value not in choices:
        raise rep.error(table, index, key, f"{value!r} is not one of {', '.join(choices)}.")
    return value


def _device(rep, table, index, value) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise rep.error(table, index, "device", f"{value!r}: expected auto, cpu, cuda, cuda:N or mps.")
    return value


def _recipe(rep, table, index, data) -> str:
    """A named recipe (optbench.recipes) → its canonical label; it sets lr_scaling and schedule itself."""
    from optbench.recipes import get_recipe

    value = data["recipe"]
    if not isinstance(value, str):
        raise rep.error(table, index, "recipe", f"expected a recipe name such as 'linear-warmup', got {value!r}.")
    try:
        recipe = get_recipe(value)
    except OptbenchError as exc:
        raise rep.error(table, index, "recipe", str(exc)) from None
    for key in ("lr_scaling", "schedule"):
        if key in data:
            raise rep.error(table, index, "recipe", f"{recipe.label!r} sets lr_scaling = {recipe.lr_scaling!r} "
                            f"and schedule = {recipe.schedule!r}; remove the {key} key or the recipe.")
    return recipe.label


# Sweep fields whose suite key (and `optbench run` option) is the singular the user writes
_KEY_OF_FIELD = {"lrs": "lr", "batch_sizes": "batch_size", "schedules": "schedule", "recipe_name": "recipe"}
# what a [[sweep]] table without the key means, where that differs from the Sweep default
_SUITE_DEFAULTS = {"seeds": 1, "device": "cpu"}


def sweep_key(field_name: str) -> str:
    """The suite key (and ``optbench run`` option, with dashes) of a :class:`~optbench.sweep.spec.Sweep` field."""
    return _KEY_OF_FIELD.get(field_name, field_name)


def sweep_settings(sweep_class: type[DataclassInstance] | None = None) -> list[Any]:
    """The settings of a sweep as flat fields: every field of ``Sweep`` but ``recipe``, then every field of
    its :class:`~optbench.engines.recipe.Recipe` but ``schedule`` (the sweep's ``schedules`` axis sets it).
    Suite keys and ``optbench run`` options are generated from this list, so a new field of either is a
    suite key and a command-line override without touching this module (``Sweep.build`` takes them flat)."""
    import dataclasses

    from optbench.engines.recipe import Recipe

    if sweep_class is None:
        from optbench.sweep.spec import Sweep

        sweep_class = Sweep
    return ([f for f in dataclasses.fields(sweep_class) if f.name != "recipe"]
            + [f for f in dataclasses.fields(Recipe) if f.name != "schedule"])


def sweep_keys(sweep_class: type[DataclassInstance] | None = None) -> tuple[str, ...]:
    """The keys of a ``[[sweep]]`` table: name, description and one per setting (:func:`sweep_settings`)."""
    return ("name", "description", *(sweep_key(f.name) for f in sweep_settings(sweep_class)))


def _number(rep, table, index, key, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise rep.error(table, index, key, f"expected a number, got {value!r}.")
    return float(value)


def _string(rep, table, index, key, value) -> str:
    if not isinstance(value, str):
        raise rep.error(table, index, key, f"expected a string, got {value!r}.")
    return value


def _specs(getter):
    def parse(rep, table, index, key, value):
        specs = _str_list(rep, table, index, key, value)
        if len(set(specs)) != len(specs):
            raise rep.error(table, index, key, f"a spec is listed twice in {specs!r}.")
        out = []
        for spec in specs:
            try:
                out.append(getter(spec))
            except OptbenchError as exc:
                raise rep.error(table, index, key, str(exc)) from None
        return out

    return parse


def _by_annotation(annotation: Any):
    """The parser of a Sweep field without its own: from its type annotation (int, float, str)."""
    text = str(annotation)
    if text.startswith(("Sequence", "list", "tuple")):
        return _str_list
    if "float" in text:
        return _number
    if "int" in text:
        return lambda rep, t, i, key, value: _int(rep, t, i, key, value, minimum=0)
    return _string


def _key_parsers() -> dict[str, Any]:
    """{suite key: parser(rep, table, index, key, value) → Sweep field value} for fields needing more than
    their type."""
    from optbench.engines.recipe import LR_SCALINGS
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.sweep.spec import DTYPES, ENGINES

    def batch_sizes(rep, t, i, key, value):
        return [_int(rep, t, i, key, v) for v in (value if isinstance(value, list) else [value])]

    def positive(rep, t, i, key, value):
        return _int(rep, t, i, key, value)

    return {
        "problems": _specs(get_problem), "optimizers": _specs(get_optimizer),
        "lr": lambda rep, t, i, key, value: _lrs(rep, t, i, value),
        "seeds": lambda rep, t, i, key, value: _seeds(rep, t, i, value),
        "steps": positive, "epochs": positive, "record_every": positive, "base_batch_size": positive,
        "batch_size": batch_sizes, "schedule": _str_list,
        "engine": lambda rep, t, i, key, value: _choice(rep, t, i, key, value, ENGINES),
        "dtype": lambda rep, t, i, key, value: _choice(rep, t, i, key, value, DTYPES),
        "lr_scaling": lambda rep, t, i, key, value: _choice(rep, t, i, key, value, tuple(LR_SCALINGS)),
        "device": lambda rep, t, i, key, value: _device(rep, t, i, value),
    }


def _sweep(rep: _Reporter, index: int, data: Any):

    from optbench.sweep import spec

    t = "sweep"
    if not isinstance(data, dict):
        raise rep.error(t, index, None, "each [[sweep]] must be a table.")
    _unknown(rep, t, index, data, sweep_keys(spec.Sweep))
    for key in ("problems", "optimizers"):
        if key not in data:
            raise rep.error(t, index, None, f"missing required key {key!r}.")
    parsers = _key_parsers()
    values: dict[str, Any] = {}
    for f in sweep_settings(spec.Sweep):
        key = sweep_key(f.name)
        if key == "recipe" and key in data:
            values[f.name] = _recipe(rep, t, index, data)
        elif key in data or key in _SUITE_DEFAULTS:
            parse = parsers.get(key) or _by_annotation(f.type)
            values[f.name] = parse(rep, t, index, key, data.get(key, _SUITE_DEFAULTS.get(key)))
    sweep = spec.Sweep.build(**values)
    try:
        sweep.expand()  # cross-checks (lr given twice, batch size on problems without one, max dimension)
    except OptbenchError as exc:
        raise rep.error(t, index, None, str(exc)) from None
    return sweep


def _tune(rep: _Reporter, data: Any) -> dict[str, Any]:
    t = "tune"
    if not isinstance(data, dict):
        raise rep.error(None, 0, "tune", "expected a table [tune].")
    _unknown(rep, t, 0, data, TUNE_KEYS)
    out = dict(data)
    for key in ("steps", "batch"):
        if key in data:
            out[key] = _int(rep, t, 0, key, data[key])
    if isinstance(data.get("trials"), dict):  # {default = 600, sgd = 1200}: as --trials '600,sgd=1200'
        for name, n in data["trials"].items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise rep.error(t, 0, "trials", f"{name}: expected an integer >= 1, got {n!r}.")
        parts = [str(n) if name == "default" else f"{name}={n}" for name, n in data["trials"].items()]
        out["trials"] = ",".join(sorted(parts, key=lambda p: "=" in p))
    elif "trials" in data:
        out["trials"] = _int(rep, t, 0, "trials", data["trials"])
    if "seeds" in data:
        out["seeds"] = _seeds(rep, t, 0, data["seeds"])
    for key in ("problems", "optimizers"):
        if key in data:
            out[key] = _str_list(rep, t, 0, key, data[key])
    if "protocol" in data:
        from optbench.tuning.protocols import PROTOCOLS

        _choice(rep, t, 0, "protocol", data["protocol"], tuple(PROTOCOLS))
    for key in ("space", "storage", "schedule"):
        if key in data and not isinstance(data[key], str):
            raise rep.error(t, 0, key, f"expected a string, got {data[key]!r}.")
    if "schedule" in data:  # one schedule for every trial; its parameters are checked against space when tuning
        from optbench.schedules import get_schedule

        try:
            get_schedule(data["schedule"])
        except OptbenchError as exc:
            raise rep.error(t, 0, "schedule", str(exc)) from None
    if "space" in data:
        from optbench.tuning.spaces import parse_space

        try:
            parse_space(data["space"])
        except OptbenchError as exc:
            raise rep.error(t, 0, "space", str(exc)) from None
    return out


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; raises UsageError naming file, line and key on any mistake."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"Suite file {str(path)!r} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 1]
        raise UsageError(f"{path}: not a UTF-8 text file (byte {exc.start} is {bad!r}); save the suite file as "
                         "UTF-8 TOML.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    rep = _Reporter(path, text)
    _unknown(rep, None, 0, data, TOP_KEYS)
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise rep.error(None, 0, key, f"expected a string, got {data[key]!r}.")
    sweeps_data = data.get("sweep", [])
    if not isinstance(sweeps_data, list):
        raise rep.error(None, 0, "sweep", "write sweeps as [[sweep]] tables.")
    if not sweeps_data and "tune" not in data:
        raise UsageError(f"{path}: no [[sweep]] table and no [tune] table: nothing to run.")
    sweeps = [_sweep(rep, i, s) for i, s in enumerate(sweeps_data)]
    tune = _tune(rep, data["tune"]) if "tune" in data else {}
    check = data.get("check", {})
    if not isinstance(check, dict):
        raise rep.error(None, 0, "check", "expected a table [check].")
    return Suite(data.get("name", path.stem), data.get("description", ""), sweeps, tune, check, path)


def apply_overrides(sweeps, overrides: dict[str, Any] | None, *, deterministic: bool = False) -> list[Any]:
    """Copies of ``sweeps`` with ``overrides`` ({Sweep field: value}, values as ``Sweep`` takes them) applied
    to every one (command line > suite file > defaults), each validated. ``deterministic``: CPU and float64,
    as ``optbench run --deterministic`` (optbench.determinism); the caller enables determinism."""
    out = [s.with_settings(**(overrides or {})) for s in sweeps]
    if deterministic:
        from optbench.determinism import deterministic_settings

        for sweep in out:
            sweep.device, sweep.dtype = deterministic_settings(sweep.problems, sweep.device, sweep.dtype)
    for sweep in out:
        sweep.expand()  # every override is validated before the first run starts
    return out


def run_suite(path: str | Path, out_dir: str | Path, *, overrides: dict[str, Any] | None = None,
              deterministic: bool = False, force: bool = False, workers: int = 1, command: str = "",
              progress_factory=None, executor=None):
    """Run every sweep of a suite into one results directory, with ``overrides`` ({Sweep field: value})
    applied to every sweep (see :func:`apply_overrides`). Returns a SweepOutcome totalled over the sweeps."""
    import time

    from optbench.runner import SweepOutcome, run_sweep

    t0 = time.perf_counter()
    suite = load_suite(path)
    if not suite.sweeps:
        raise UsageError(f"{suite.path}: no [[sweep]] table; use 'optbench tune --suite' for a [tune] table.")
    sweeps = apply_overrides(suite.sweeps, overrides, deterministic=deterministic)
    if deterministic:
        from optbench.determinism import enable_determinism

        enable_determinism()
    total = SweepOutcome(Path(out_dir), 0, 0, 0, 0.0, {})
    for index, sweep in enumerate(sweeps, start=1):
        if hasattr(progress_factory, "begin_sweep"):  # the CLI's bar says 'sweep 2/5'
            progress_factory.begin_sweep(index, len(sweeps))
        outcome = run_sweep(sweep, out_dir, force=force, command=command, progress_factory=progress_factory,
                            workers=workers, executor=executor)
        total.runs_total += outcome.runs_total
        total.runs_skipped += outcome.runs_skipped
        total.runs_done += outcome.runs_done
        for engine, n in outcome.engines.items():
            total.engines[engine] = total.engines.get(engine, 0) + n
    from optbench.results import update_manifest

    update_manifest(out_dir, lambda manifest: manifest.setdefault("suites", []).append(
        {"name": suite.name, "path": str(suite.path), "description": suite.description,
         "overrides": {k: _plain(v) for k, v in (overrides or {}).items()}}))
    total.wall_time_s = time.perf_counter() - t0
    return total


def _plain(value: Any) -> Any:
    """An override as the manifest records it: specs as their labels."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return getattr(value, "label", value)
