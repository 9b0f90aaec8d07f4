"""`optbench run --suite`: every option of `run` is applied to the suite's sweeps or refused, and the suite
keys and the command-line override table follow the fields of `Sweep`, so a new option cannot be dropped."""

import dataclasses
import json

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from optbench.cli.app import app
from optbench.cli.run import NOT_WITH_SUITE, sweep_options
from optbench.engines.recipe import Recipe
from optbench.sweep.spec import Sweep

RUN_PARAMS = {p.name: p for p in get_command(app).commands["run"].params}
NET = "mnist-mlp(width=8, depth=1, batch_size=50, train_size=200, test_size=50)"

# For every Sweep option of `run`: a command-line value and what every sweep of the suite must then hold.
# The suite below (a network problem with a batch size) accepts each of them.
SWEEP_SAMPLES = {
    "lr": ("1e-3,1e-2", [1e-3, 1e-2]),
    "seeds": ("3", [0, 1, 2]),
    "steps": ("7", 7),
    "epochs": ("2", 2),
    "batch_size": ("25,50", [25, 50]),
    "schedule": ("cosine", ["cosine"]),
    "clip_norm": ("0.01", 0.01),
    "clip_value": ("0.5", 0.5),
    "label_smoothing": ("0.1", 0.1),
    "lr_scaling": ("sqrt", "sqrt"),
    "base_batch_size": ("25", 25),
    "noise_scale_every": ("3", 3),
    "engine": ("loop", "loop"),
    "device": ("cpu", "cpu"),  # the suite says auto
    "dtype": ("float32", "float32"),
    "record_every": ("2", 2),
    "target": ("0.5", 0.5),
}
# `run` options that are not Sweep fields: how each reaches a suite run (checked in test_control_option)
CONTROL = {
    "out": (lambda tmp: ["--out", str(tmp / "elsewhere")], lambda c, tmp: c["out_dir"] == tmp / "elsewhere"),
    "force": (lambda tmp: ["--force"], lambda c, tmp: c["run_sweep"]["force"] is True),
    "workers": (lambda tmp: ["--workers", "2"], lambda c, tmp: c["run_sweep"]["workers"] == 2),
    "deterministic": (lambda tmp: ["--deterministic"],
                      lambda c, tmp: c["determinism"] and all(s.device == "cpu" for s in c["sweeps"])),
    "all_lrs": (lambda tmp: ["--all-lrs"], lambda c, tmp: c["print"]["all_lrs"] is True),
    "json_out": (lambda tmp: ["--json"], lambda c, tmp: c["print"]["json_out"] is True),
    "quiet": (lambda tmp: ["--quiet"], lambda c, tmp: c["print"]["quiet"] is True),
    "report": (lambda tmp: ["--report"], lambda c, tmp: c["report"] is True),
    "suite": (lambda tmp: [], lambda c, tmp: len(c["sweeps"]) == 2),  # the suite's two sweeps ran
    "memory_limit": (lambda tmp: ["--memory-limit", "2GiB"],  # through the environment, to every sweep and worker
                     lambda c, tmp: __import__("os").environ["OPTBENCH_MEMORY_LIMIT"] == "2GiB"),
    "executor": (lambda tmp: ["--executor", "dask", "--scheduler", "tcp://127.0.0.1:1"],  # connects when it runs
                 lambda c, tmp: c["run_sweep"]["executor"].name == "dask"),
    "scheduler": (lambda tmp: ["--executor", "dask", "--scheduler", "tcp://127.0.0.1:1"],
                  lambda c, tmp: c["run_sweep"]["executor"].address == "tcp://127.0.0.1:1"),
    "scheduler_file": (lambda tmp: ["--executor", "dask", "--scheduler-file", _scheduler_file(tmp)],
                       lambda c, tmp: c["run_sweep"]["executor"].address == "tcp://127.0.0.1:2"),
}


def _scheduler_file(tmp) -> str:
    (tmp / "scheduler.json").write_text('{"address": "tcp://127.0.0.1:2"}')
    return str(tmp / "scheduler.json")


@pytest.fixture
def suite_file(tmp_path, monkeypatch):
    from optbench.data import store
    from optbench.data.synthetic import write_dataset

    write_dataset("mnist", tmp_path / "data" / "mnist", n_train=200, n_test=50)
    monkeypatch.setenv(store.DATA_ENV, str(tmp_path / "data"))
    f = tmp_path / "s.toml"
    f.write_text(f'[[sweep]]\nproblems = ["{NET}"]\noptimizers = ["sgd"]\nsteps = 4\ndevice = "auto"\n'
                 f'lr_scaling = "linear"\n[[sweep]]\nproblems = ["{NET}"]\noptimizers = ["adam"]\nsteps = 5\n'
                 'device = "auto"\nlr_scaling = "linear"\n')
    return f


def invoke(monkeypatch, tmp_path, suite_file, args):
    """Run ``optbench run --suite`` in-process with the sweeps captured instead of run; returns (result,
    captured)."""
    import optbench.cli.run as cli_run
    import optbench.determinism
    import optbench.runner

    captured = {"sweeps": [], "determinism": False, "report": None, "print": None, "run_sweep": None,
                "out_dir": None}

    def fake_run_sweep(sweep, out_dir, **kwargs):
        captured["sweeps"].append(sweep)
        captured["run_sweep"], captured["out_dir"] = kwargs, out_dir
        return optbench.runner.SweepOutcome(out_dir, 0, 0, 0, 0.0, {})

    monkeypatch.setattr(optbench.runner, "run_sweep", fake_run_sweep)
    monkeypatch.setenv("OPTBENCH_MEMORY_LIMIT", "")  # --memory-limit sets it: undone after the test
    monkeypatch.setattr(optbench.determinism, "enable_determinism", lambda: captured.update(determinism=True))
    monkeypatch.setattr(cli_run, "print_outcome", lambda outcome, **kw: captured.update(print=kw))
    monkeypatch.setattr(cli_run, "_maybe_report", lambda outcome, report, quiet: captured.update(report=report))
    args = ["run", "--suite", str(suite_file), *args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    return CliRunner().invoke(app, args), captured


def test_every_run_option_is_applied_to_suites_or_refused():
    """The classification is complete: a new `run` option must be a Sweep field (and then needs a sample
    here), refused with --suite, or a control option whose effect is checked below."""
    options = sweep_options()
    assert set(options) <= set(RUN_PARAMS), "every Sweep field needs a `run` option"
    unclassified = set(RUN_PARAMS) - set(options) - set(CONTROL)
    assert not unclassified, f"options neither applied to suites nor refused: {unclassified}"
    assert set(options) == set(SWEEP_SAMPLES) | set(NOT_WITH_SUITE)


@pytest.mark.parametrize("option", sorted(set(sweep_options()) - set(NOT_WITH_SUITE)))
def test_sweep_option_overrides_every_sweep(option, tmp_path, monkeypatch, suite_file):
    text, expected = SWEEP_SAMPLES[option]
    flag = RUN_PARAMS[option].opts[0]
    result, captured = invoke(monkeypatch, tmp_path, suite_file, [flag, text])
    assert result.exit_code == 0, result.output
    field = sweep_options()[option]
    assert len(captured["sweeps"]) == 2
    for sweep in captured["sweeps"]:
        assert sweep.setting(field) == expected, (option, sweep.setting(field))
    assert [s.steps for s in captured["sweeps"]] == ([7, 7] if option == "steps" else [4, 5])  # the file's own
    assert captured["print"]["target"] == (0.5 if option == "target" else None)


@pytest.mark.parametrize("option", sorted(NOT_WITH_SUITE))
def test_options_that_cannot_apply_to_a_suite_are_refused(option, tmp_path, monkeypatch, suite_file):
    value = {"problem": "saddle", "opt": "adam", "recipe": "goyal"}[option]
    result, captured = invoke(monkeypatch, tmp_path, suite_file, [RUN_PARAMS[option].opts[0], value])
    assert result.exit_code == 2
    assert "cannot be combined with --suite" in result.output and "Traceback" not in result.output
    assert not captured["sweeps"]


@pytest.mark.parametrize("option", sorted(CONTROL))
def test_control_option(option, tmp_path, monkeypatch, suite_file):
    args, check = CONTROL[option]
    result, captured = invoke(monkeypatch, tmp_path, suite_file, args(tmp_path))
    assert result.exit_code == 0, result.output
    assert check(captured, tmp_path), captured


def test_bad_override_values_are_refused_as_run_refuses_them(tmp_path, monkeypatch, suite_file):
    """The overrides go through the parser `run` uses: the same one-sentence errors, before any run."""
    for args, message in ((["--lr", "-1"], "must be > 0"), (["--batch-size", "4,x"], "expected integers"),
                          (["--schedule", "cosin"], "cosin"), (["--target", "nan"], "finite")):
        result, captured = invoke(monkeypatch, tmp_path, suite_file, args)
        assert result.exit_code == 2 and message in result.output and not captured["sweeps"], (args, result.output)


def test_a_new_sweep_field_is_a_suite_key_and_an_override(tmp_path, monkeypatch):
    """Suite keys and the override table are generated from the Sweep dataclass and its Recipe's."""
    import optbench.sweep.spec
    from optbench.suite import load_suite, sweep_keys

    assert set(sweep_keys()) - {"name", "description"} == {
        {"lrs": "lr", "batch_sizes": "batch_size", "schedules": "schedule", "recipe_name": "recipe"}.get(f.name, f.name)
        for f in dataclasses.fields(Sweep) if f.name != "recipe"} | (set(Recipe.field_names()) - {"schedule"})
    Wider = dataclasses.make_dataclass("Wider", [("warp_factor", float, dataclasses.field(default=1.0)),
                                                 ("passes", int, dataclasses.field(default=1))], bases=(Sweep,))
    monkeypatch.setattr(optbench.sweep.spec, "Sweep", Wider)
    assert {"warp_factor", "passes"} <= set(sweep_keys())
    assert sweep_options()["warp_factor"] == "warp_factor"
    f = tmp_path / "w.toml"
    f.write_text('[[sweep]]\nproblems = ["rosenbrock"]\noptimizers = ["adam"]\nwarp_factor = 2.5\npasses = 3\n')
    (sweep,) = load_suite(f).sweeps
    assert isinstance(sweep, Wider) and sweep.warp_factor == 2.5 and sweep.passes == 3
    f.write_text('[[sweep]]\nproblems = ["rosenbrock"]\noptimizers = ["adam"]\nwarp_factor = "fast"\n')
    from optbench.errors import UsageError

    with pytest.raises(UsageError, match=r"w.toml:4: .*warp_factor: expected a number"):
        load_suite(f)


def test_suite_keys_cover_every_recipe_setting(tmp_path, suite_file):  # suite_file: the synthetic data
    """Settings a suite could not write before (clipping, label smoothing, noise scale, target)."""
    from optbench.suite import load_suite

    f = tmp_path / "r.toml"
    f.write_text(f'[[sweep]]\nproblems = ["{NET}"]\noptimizers = ["sgd"]\nclip_norm = 1\nclip_value = 0.5\n'
                 'label_smoothing = 0.1\nnoise_scale_every = 2\ntarget = 0.25\n')
    (sweep,) = load_suite(f).sweeps
    recipe = sweep.recipe
    assert (recipe.clip_norm, recipe.clip_value, recipe.label_smoothing, recipe.noise_scale_every, sweep.target) == (
        1.0, 0.5, 0.1, 2, 0.25)


# the schedule is the sweep's `schedules` axis (key and option `schedule`)
RECIPE_FIELDS = sorted(set(Recipe.field_names()) - {"schedule"})


def test_every_recipe_field_is_a_suite_key_and_a_run_option(tmp_path, suite_file):
    """Each field of Recipe, written in a suite file, reaches the sweep's recipe (the run option of each is
    checked by test_sweep_option_overrides_every_sweep and test_recipe_options_of_a_plain_run)."""
    from optbench.suite import load_suite, sweep_keys

    assert set(RECIPE_FIELDS) <= set(sweep_keys()) and set(RECIPE_FIELDS) <= set(sweep_options().values())
    assert sweep_options()["schedule"] == "schedules"
    values = {name: SWEEP_SAMPLES[name][1] for name in RECIPE_FIELDS}
    f = tmp_path / "every.toml"
    f.write_text(f'[[sweep]]\nproblems = ["{NET}"]\noptimizers = ["sgd"]\nbatch_size = [25, 50]\nsteps = 3\n'
                 + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    (sweep,) = load_suite(f).sweeps
    assert {name: getattr(sweep.recipe, name) for name in RECIPE_FIELDS} == values


@pytest.mark.parametrize("field", RECIPE_FIELDS)
def test_recipe_options_of_a_plain_run(field, tmp_path, monkeypatch, suite_file):
    """`optbench run` without a suite: every recipe option reaches the Sweep's recipe."""
    import optbench.runner

    captured = []
    monkeypatch.setattr(optbench.runner, "run_sweep",
                        lambda sweep, out_dir, **kw: captured.append(sweep) or optbench.runner.SweepOutcome(
                            out_dir, 0, 0, 0, 0.0, {}))
    monkeypatch.setattr("optbench.cli.run.print_outcome", lambda outcome, **kw: None)
    text, expected = SWEEP_SAMPLES[field]
    option = next(o for o, f in sweep_options().items() if f == field)
    result = CliRunner().invoke(app, ["run", "-p", NET, "-o", "sgd", "--batch-size", "25,50", "--steps", "3",
                                      *(["--lr-scaling", "linear"] if field == "base_batch_size" else []),
                                      RUN_PARAMS[option].opts[0], text, "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    (sweep,) = captured
    assert getattr(sweep.recipe, field) == expected


def test_clip_norm_and_schedule_reach_the_suite_runs(tmp_path):
    """The issue's example, end to end in-process: the manifest and the runs carry the overrides."""
    from optbench.results import load_summary

    f = tmp_path / "s.toml"
    f.write_text('[[sweep]]\nproblems = ["rosenbrock"]\noptimizers = ["adam"]\nlr = [1e-2]\nsteps = 30\n')
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "--suite", str(f), "--clip-norm", "0.01", "--schedule", "cosine",
                                      "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    (record,) = manifest["sweeps"]
    assert record["clip_norm"] == 0.01 and record["schedules"] == ["cosine"]
    assert manifest["suites"][0]["overrides"] == {"clip_norm": 0.01, "schedules": ["cosine"]}
    (label,) = load_summary(out)["optimizer_label"]
    assert label == "adam+cosine+clip-norm=0.01"
