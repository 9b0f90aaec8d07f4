"""Suite files: shipped suites load, bad keys and values are reported with file, line and key."""

from pathlib import Path

import pytest
from cli_invoke import invoke

from optbench.errors import UsageError
from optbench.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "problems").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_suites_load(path):
    suite = load_suite(path)
    assert suite.sweeps or suite.tune
    assert all(s.expand() for s in suite.sweeps)


def test_sweep_fields_and_check_passthrough(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('name = "x"\n[[sweep]]\nproblems = ["rosenbrock", "valley(kappa=100)"]\n'
                 'optimizers = ["adam", "sgd-momentum(momentum=0.8)"]\nlr = "1e-3:1e-1:3"\nseeds = 2\n'
                 'steps = 50\n[check]\nanything = {nested = [1, 2]}\n')
    suite = load_suite(f)
    (sweep,) = suite.sweeps
    assert [p.label for p in sweep.problems] == ["rosenbrock", "valley(kappa=100.0)"] or len(sweep.problems) == 2
    assert sweep.seeds == [0, 1] and sweep.steps == 50 and len(sweep.lrs) == 3
    assert len(sweep.expand()) == 2 * 2 * 3 * 2
    assert suite.check == {"anything": {"nested": [1, 2]}}
    assert suite.name == "x" and suite.path == f


@pytest.mark.parametrize("body, line, key", [
    ('[[sweep]]\nproblems = ["rosenbrock"]\noptimizers = ["adam"]\nstepz = 3\n', 4, "stepz"),
    ('[[sweep]]\nproblems = ["rosenbrock"]\noptimizers = ["adam"]\n\n[[sweep]]\nproblems = ["nope"]\n'
     'optimizers = ["adam"]\n', 6, "problems"),
    ('[[sweep]]\nproblems = ["rosenbrock"]\noptimizers = ["adam(lr=-1)"]\n', 3, "optimizers"),
    ('[[sweep]]\nproblems = ["rosenbrock"]\noptimizers = ["adam"]\nseeds = -2\n', 4, "seeds"),
    ('[[sweep]]\nproblems = ["rosenbrock"]\noptimizers = ["adam"]\nengine = "fast"\n', 4, "engine"),
    ('name = "a"\ncolour = 3\n[[sweep]]\nproblems = ["rosenbrock"]\noptimizers = ["adam"]\n', 2, "colour"),
    ('[[sweep]]\nproblems = ["rosenbrock"]\noptimizers = ["adam"]\n[tune]\nprotocol = "best"\n', 5, "protocol"),
    ('[[sweep]]\nproblems = ["rosenbrock"]\noptimizers = ["adam"]\n[tune]\ntrials = {default = 10, sgd = 0}\n', 5,
     "sgd: expected an integer"),
])
def test_bad_keys_name_file_line_and_key(tmp_path, body, line, key):
    f = tmp_path / "bad.toml"
    f.write_text(body)
    with pytest.raises(UsageError) as err:
        load_suite(f)
    assert f"{f}:{line}:" in str(err.value) and key in str(err.value)


def test_run_suite_cli_and_overrides(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[[sweep]]\nproblems = ["rosenbrock"]\noptimizers = ["adam", "sgd"]\nlr = [1e-3]\nsteps = 20\n')
    out = tmp_path / "out"
    r = invoke("run", "--suite", str(f), "--out", str(out), "--seeds", "2", "--json")
    assert r.exit_code == 0, r.stderr
    from optbench.results import load_summary

    s = load_summary(out)
    assert len(s) == 4 and set(s["steps"]) == {20}
    bad = invoke("run", "--suite", str(f), "--problem", "saddle", "--out", str(out))
    assert bad.exit_code == 2 and "--suite" in bad.stderr
    neither = invoke("run", "--out", str(out))
    assert neither.exit_code == 2 and "--suite" in neither.stderr


def test_tune_trials_per_optimizer_in_a_suite(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text('[[sweep]]\nproblems = ["rosenbrock"]\noptimizers = ["adam"]\n'
                 '[tune]\ntrials = {sgd = 1200, default = 600}\n')
    assert load_suite(f).tune["trials"] == "600,sgd=1200"  # the --trials text, default first
    f.write_text('[[sweep]]\nproblems = ["rosenbrock"]\noptimizers = ["adam"]\n[tune]\ntrials = 40\n')
    assert load_suite(f).tune["trials"] == 40
