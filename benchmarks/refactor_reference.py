"""Reference outputs of a fixed set of small sweeps and tunes, for refactors that must not change numbers.

    python benchmarks/refactor_reference.py DIR          # writes DIR/<case>/{steps,summary}.csv, tune.json
    diff -r BEFORE AFTER                                 # equal, byte for byte, when nothing changed

Every case runs through the ``optbench`` command line (the path users take, and the one stable across a
refactor of the Python signatures): analytic batched and loop sweeps (noisy and not), a schedule +
clip-norm recipe, label smoothing and the noise scale on a network, lr scaling over batch sizes, a named
recipe, a user problem from examples/my_problem.py, a suite file and a tiny ``tune``. Each result
directory's step and summary tables are dumped sorted by (run id, step) with floats written by ``repr``
(full precision); columns measuring time or memory are dropped, as they differ between any two runs.
The tuning journal's trials (study name, number, params, value) are dumped as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = """
[[sweep]]
name = "suite-clip"
problems = ["rosenbrock", "noisy-quadratic(dim=4)"]
optimizers = ["adam", "sgd-momentum"]
lr = [0.01, 0.03]
steps = 40
seeds = 2
clip_value = 0.5
schedule = ["cosine"]
"""
CASES: dict[str, list[str]] = {
    "analytic-batched": ["run", "-p", "rosenbrock,saddle", "-o", "adam,sgd-momentum,rmsprop", "--lr",
                         "1e-3,1e-2", "--steps", "60", "--seeds", "2", "--engine", "batched"],
    "analytic-loop": ["run", "-p", "rosenbrock", "-o", "adam,lbfgs", "--steps", "30", "--engine", "loop"],
    "noisy-loop": ["run", "-p", "noisy-quadratic(dim=5)", "-o", "sgd,adam", "--steps", "50", "--seeds", "2",
                   "--engine", "loop", "--batch-size", "4,16"],
    "noisy-batched": ["run", "-p", "noisy-quadratic(dim=5)", "-o", "sgd,adam", "--steps", "50", "--seeds", "2",
                      "--engine", "batched", "--batch-size", "4,16"],
    "recipe-analytic": ["run", "-p", "rosenbrock,noisy-quadratic", "-o", "adam,sgd-momentum", "--steps", "80",
                        "--schedule", "warmup-cosine(warmup=0.1),constant", "--clip-norm", "1.0",
                        "--record-every", "7"],
    "recipe-analytic-loop": ["run", "-p", "rosenbrock", "-o", "adam", "--steps", "40", "--schedule", "linear",
                             "--clip-norm", "1.0", "--clip-value", "0.3", "--engine", "loop"],
    "lr-scaling": ["run", "-p", "noisy-quadratic", "-o", "sgd(lr=0.05)", "--batch-size", "8,32", "--steps", "40",
                   "--lr-scaling", "sqrt", "--base-batch-size", "4"],
    "named-recipe": ["run", "-p", "noisy-quadratic", "-o", "sgd(lr=0.05)", "--batch-size", "8,32", "--steps",
                     "40", "--recipe", "linear-warmup(warmup=0.1)"],
    "network": ["run", "-p", "{mlp}", "-o", "adam,sgd-momentum", "--steps", "12", "--device", "cpu",
                "--schedule", "cosine", "--clip-norm", "1.0", "--label-smoothing", "0.1"],
    "network-noise-scale": ["run", "-p", "{mlp}", "--batch-size", "25,50", "-o", "sgd",
                            "--steps", "10", "--device", "cpu", "--noise-scale-every", "5"],
    "user-analytic": ["run", "-p", "examples/my_problem.py:tilted_bowl(tilt=0.3)", "-o", "adam,sgd", "--steps",
                      "50", "--seeds", "2"],
    "user-training": ["run", "-p", "examples/my_problem.py:two_moons(width=8)", "-o", "adam", "--epochs", "1",
                      "--device", "cpu", "--clip-norm", "2.0"],
    "suite": ["run", "--suite", "{suite}"],
    "tune": ["tune", "-p", "rosenbrock", "-o", "adam,sgd", "--trials", "8", "--steps", "50", "--seeds", "2",
             "--batch", "4", "--clip-norm", "2.0", "--schedule", "cosine"],
    "tune-loop": ["tune", "-p", "rosenbrock", "-o", "adam", "--trials", "4", "--steps", "30", "--seeds", "1",
                  "--engine", "loop", "--clip-value", "1.0"],
    # a round whose trials each have their own schedule (searched warm-up), batched
    "tune-schedule-space": ["tune", "-p", "rosenbrock", "-o", "adam", "--trials", "8", "--steps", "40", "--seeds",
                            "1", "--batch", "4", "--schedule", "warmup-cosine", "--space", "warmup=0:20"],
    # loop-only classes: shared objects (stacked, groups), side by side, schedule-free; and a noisy problem
    "tune-trials": ["tune", "-p", "rosenbrock,noisy-quadratic(dim=3)", "-o", "adabelief,madgrad,mars,schedulefreesgd",
                    "--trials", "6", "--steps", "30", "--seeds", "1", "--batch", "3", "--clip-norm", "1.0"],
}
MLP = "mnist-mlp(width=16, depth=2, batch_size=50, train_size=400, test_size=100)"  # synthetic data
VARYING = ("time", "memory", "bytes", "examples_per_s", "rss")  # columns that differ between any two runs


def dump_tables(results: Path, dest: Path) -> None:
    import pyarrow.parquet as pq

    for kind in ("steps", "summary"):
        files = sorted((results / kind).glob("*.parquet"))
        rows = []
        columns: list[str] = []
        for f in files:
            table = pq.read_table(f)
            kept = [c for c in table.column_names if not any(v in c for v in VARYING)]
            columns += [c for c in kept if c not in columns]
            for row in table.select(kept).to_pylist():
                rows.append(row)
        rows.sort(key=lambda r: (r["run_id"], r.get("step", 0)))
        with open(dest / f"{kind}.csv", "w") as out:
            out.write(",".join(columns) + "\n")
            for row in rows:
                out.write(",".join(repr(row.get(c)) for c in columns) + "\n")


def dump_journal(results: Path, dest: Path) -> None:
    journal = results / "tuning.journal"
    if not journal.exists():
        return
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    studies = {}
    for summary in sorted(optuna.get_all_study_summaries(storage), key=lambda s: s.study_name):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        studies[summary.study_name] = [(t.number, t.params, t.value, t.state.name) for t in study.trials]
    (dest / "tune.json").write_text(json.dumps(studies, indent=1, sort_keys=True, default=repr))


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    suite = out / "suite.toml"
    suite.write_text(SUITE)
    from optbench.data.synthetic import write_dataset

    write_dataset("mnist", out / "data" / "mnist", n_train=1000, n_test=200)  # deterministic (seeded)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPTBENCH_DATA": str(out / "data")}
    for name, args in CASES.items():
        dest = out / name
        if (dest / "summary.csv").exists():
            continue
        results = dest / "results"
        args = [a.replace("{suite}", str(suite)).replace("{mlp}", MLP) for a in args]
        subprocess.run([sys.executable, "-m", "optbench", *args, "--out", str(results), "-q"], cwd=ROOT, env=env,
                       check=True)
        dump_tables(results, dest)
        dump_journal(results, dest)
        for f in sorted(results.rglob("*")):
            if f.is_file():
                f.unlink()
        for d in sorted(results.rglob("*"), reverse=True):
            d.rmdir()
        results.rmdir()
        print(name, "ok", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
