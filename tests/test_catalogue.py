"""The pytorch_optimizer catalogue: every optimizer the library ships is reachable by name, runs or is refused
with its reason, and gets the capabilities it needs from the engines and the tuner.

- the static table equals what the installed library says (names, classes, constructor defaults);
- every supported catalogue entry runs on Rosenbrock and on a tiny MLP (loop engines), its state memory is
  measured and its defaults are the library's;
- each capability is checked with a real optimizer that needs it, against the class driven by hand: a closure
  (AliG), backward with create_graph (AdaHessian, Sophia-H), eval()/train() (Schedule-Free AdamW), the lr-free
  search space (Prodigy), Muon's parameter groups on an MLP, matrix-only methods on a 2-D problem.
"""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from optbench.engines.loop import AnalyticClosure, run_loop
from optbench.engines.network import run_network
from optbench.engines.recipe import Recipe
from optbench.errors import SpecError
from optbench.optimizers import catalogue, catalogue_table, get_optimizer, list_optimizers
from optbench.problems import get_problem

ALL = list_optimizers()
GENERATED = [e for e in ALL if e.generated]
SUPPORTED = [e.name for e in GENERATED if not e.unsupported]
UNSUPPORTED = [e.name for e in GENERATED if e.unsupported]
MLP = "mnist-mlp(width=6, depth=2, batch_size=20, train_size=120, test_size=40, precision='float64', eval_every=3)"

# Rosenbrock from (-1.2, 1), whose gradient there is ~200: these leave it within 5 steps at the library's
# defaults. The method is run as shipped, and diverging at its defaults is a result, not a failure; a new entry
# here needs its reason.
DIVERGE_ON_ROSENBROCK = {
    "avagrad": "lr = 0.1 with eps = 0.1: nearly plain SGD at a rate 10× too large for this start",
    "dualadam": "its first step is ~1e4 times the gradient",
    "msvag": "lr = 0.01 on an SGD-like step",
    "ranger": "its Lookahead/RAdam start is plain momentum SGD at lr 1e-3 while ρ_t ≤ 5, with gradient "
              "centralisation",
    "schedulefreesgd": "lr = 1.0 by default",
    "sgdsai": "lr = 0.01 scaled by the initial gradient SNR, no adaptive denominator",
    "srmm": "lr = 0.01 on an SGD-like step",
}
# Entries that by design take no step in the first 5 steps from this start.
STILL_AFTER_5_STEPS = {
    "adashift": "updates only once keep_num = 10 gradients are queued",
    "po.radam": "no step while ρ_t ≤ 5 (degenerated_to_sgd=False)",
    "sara": "updates only weights below threshold = 1e-3 in magnitude; the start has none",
}




def _entry(name):
    return next(e for e in ALL if e.name == name)


# ---- the table is the installed library's ---------------------------------------------------------------

def test_table_matches_the_installed_library():
    """Regenerating the table from the installed pytorch_optimizer gives the committed file, byte for byte
    (run ``python -m optbench.optimizers.catalogue`` after upgrading the library)."""
    import pytorch_optimizer

    assert set(catalogue_table.CLASSES) == set(pytorch_optimizer.get_supported_optimizers())
    assert catalogue.render_table(catalogue.generate_table()) == catalogue.TABLE_PATH.read_text(encoding="utf-8")


def test_every_library_optimizer_is_reachable_by_name():
    """Each of get_supported_optimizers() is a registry entry of its class: under its own name, under po.NAME
    where that name is the registry's for another class, or as the curated entry of the same class."""
    import pytorch_optimizer

    by_target = {e.target: e for e in ALL}
    for lib_name in pytorch_optimizer.get_supported_optimizers():
        cls = pytorch_optimizer.load_optimizer(lib_name)
        if cls.__module__.startswith("torch.optim"):
            assert f"torch.optim:{cls.__name__}" in by_target, lib_name
            continue
        entry = by_target[f"pytorch_optimizer:{cls.__name__}"]
        assert entry.resolve_class() is cls
        assert entry.name in (lib_name, catalogue.PREFIX + lib_name) or not entry.generated, (lib_name, entry.name)
        if entry.name.startswith(catalogue.PREFIX):
            assert _entry(lib_name).target != entry.target  # the prefix only where the plain name is taken


def test_catalogue_is_listed_without_importing_the_library(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from optbench.optimizers import list_optimizers; n = len(list_optimizers()); "
            "print(n, 'pytorch_optimizer' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) == len(ALL) > 120 and out[1:] == ["False", "False"]


def test_listing_shows_capabilities_and_support():
    import json

    from cli_invoke import invoke

    rows = json.loads(invoke("list", "optimizers", "--json").stdout)
    row = {r["name"]: r for r in rows}
    assert row["sophiah"]["create_graph"] and row["sophiah"]["needs_hessian"]
    assert row["schedulefreeadamw"]["schedule_free"] and row["prodigy"]["lr_free"]
    assert row["muon"]["param_groups"] == "muon" and "AdamW" in row["muon"]["matrix_only"]
    assert not row["lomo"]["supported"] and "backward()" in row["lomo"]["unsupported"]
    assert row["adabelief"]["source"] == "pytorch_optimizer" and row["adabelief"]["params"]["eps"]["default"] == 1e-16
    assert "lr-free" in row["prodigy"]["deviations"]  # what report pages show next to its results
    assert row["adam"]["capabilities"] == [] and row["lbfgs"]["capabilities"] == ["calls the loss closure in step()"]


def test_every_listed_optimizer_has_a_reference_or_says_why_not():
    """Each entry of ``optbench list optimizers`` cites a paper (title and arXiv id or address) or states
    "no paper: <why>"; the generated ones take it from pytorch_optimizer's README table or class docstring."""
    for entry in ALL:
        assert entry.reference, f"{entry.name}: no reference and no 'no paper' reason"
        if entry.reference.startswith("no paper: "):
            assert len(entry.reference) > 40 and entry.generated, entry.name
        else:
            assert re.search(r"\(|\d{4}", entry.reference), (entry.name, entry.reference)  # a link or a year
    cited = [e for e in GENERATED if "arXiv:" in e.reference]
    assert len(cited) > 100
    assert _entry("adabelief").reference.endswith("(arXiv:2010.07468)")
    assert "arXiv:2306.06101" in _entry("prodigy").reference and "arXiv:2409.11321" in _entry("soap").reference
    assert _entry("sgdp").reference == _entry("adamp").reference  # one paper, two classes (README_ALIASES)


def test_readme_references_are_parsed_from_the_library_table():
    readme = "\n".join([
        "| Optimizer | Description | Official Code | Paper(Citation) |",
        "|---|---|---|---|",
        "| AdaBelief | *Adapting Step-sizes by the Belief in Observed Gradients* | [github](x) | "
        "[paper](https://arxiv.org/abs/2010.07468)([cite](y)) |",
        "| Yogi | *Adaptive Methods for Nonconvex Optimization* | [github](x) | "
        "[paper](https://papers.nips.cc/p/8186) |",
        "| ROSE | *Stateless optimization* | [github](x) | [paper]()([cite](y)) |",
        "| LR Scheduler | Description | Official Code | Paper(Citation) |",
        "| WSD | *Warmup-Stable-Decay* | [github](x) | [paper](https://arxiv.org/abs/2404.06395) |",
    ])
    rows = catalogue.readme_references(readme)
    assert rows == {"AdaBelief": "Adapting Step-sizes by the Belief in Observed Gradients (arXiv:2010.07468)",
                    "Yogi": "Adaptive Methods for Nonconvex Optimization (papers.nips.cc/p/8186)"}
    aliased = {"D-Adaptation": "D (arXiv:2301.07733)"}
    assert catalogue.class_reference("DAdaptSGD", "", aliased) == "D (arXiv:2301.07733)"
    assert catalogue.class_reference("Magma", "Reference:\n    https://arxiv.org/abs/2602.15322", {}) == \
        "arXiv:2602.15322"
    assert catalogue.class_reference("Nothing", "no link here", rows) == ""


@pytest.mark.parametrize("columns", [80, 120])
def test_listing_reads_whole_at_80_and_120_columns(columns):
    """Nothing is cut with "…" at either width; every line fits; references (arXiv ids) are shown."""
    import os
    import subprocess

    out = subprocess.run(["optbench", "list", "optimizers"], capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": str(columns)}).stdout
    assert "…" not in out
    from rich.cells import cell_len

    assert max(cell_len(line) for line in out.splitlines()) <= columns  # cells: d̂ is one
    assert "(arXiv:2306.06101)" in out and "(arXiv:2010.07468)" in out  # prodigy's and adabelief's, whole
    assert ("batched: yes" in out) == (columns < 110)  # narrow: source and rule under the name


# ---- every entry runs, or is refused with its reason ------------------------------------------------------

@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_is_refused_with_its_reason(name):
    entry = _entry(name)
    assert len(entry.unsupported) > 30
    with pytest.raises(SpecError, match="not supported: " + re.escape(entry.unsupported[:20])):
        get_optimizer(name)


def test_unsupported_is_one_sentence_and_exit_2_from_the_cli(tmp_path):
    import subprocess

    done = subprocess.run(["optbench", "run", "-p", "rosenbrock", "-o", "lomo", "--steps", "5", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    message = " ".join(done.stderr.split())
    assert "'lomo'" in message and "not supported" in message and "fuses the update into backward()" in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))


def _assert_reproducible(trace, run_again) -> None:
    """The run again from another state of torch's global generator gives the same trace and leaves that state
    alone: whatever a class draws from it is fixed by the run (optbench.engines.step_rng)."""
    torch.manual_seed(2)
    torch.rand(100)
    caller = torch.get_rng_state()
    again = run_again()
    assert torch.equal(torch.get_rng_state(), caller), "the run moved the caller's global generator"
    assert np.array_equal(trace.loss, again.loss, equal_nan=True), "not reproducible: it depends on what ran before"


@pytest.mark.parametrize("name", SUPPORTED)
def test_runs_on_rosenbrock(name):
    torch.manual_seed(1)
    trace = run_loop(get_problem("rosenbrock"), get_optimizer(name), seed=0, steps=5)
    _assert_reproducible(trace, lambda: run_loop(get_problem("rosenbrock"), get_optimizer(name), seed=0, steps=5))
    if name in DIVERGE_ON_ROSENBROCK:
        assert trace.status == ["diverged"], f"{name} no longer diverges: drop it from DIVERGE_ON_ROSENBROCK"
        return
    assert trace.status == ["done"] and trace.end_step.tolist() == [5]
    assert np.isfinite(trace.loss).all() and np.isfinite(trace.coords).all()
    moved = not np.array_equal(trace.coords[0], trace.coords[-1])
    assert moved != (name in STILL_AFTER_5_STEPS), f"{name}: moved={moved}"
    state = float(trace.cost["state_bytes_per_param"][0])
    assert math.isfinite(state) and state >= 0, state


@pytest.mark.parametrize("name", SUPPORTED)
def test_runs_on_a_tiny_mlp(network_data, name):
    torch.manual_seed(1)
    trace = run_network(get_problem(MLP), get_optimizer(name), seed=0, steps=4)
    _assert_reproducible(trace, lambda: run_network(get_problem(MLP), get_optimizer(name), seed=0, steps=4))
    assert trace.status == ["done"], name
    assert np.isfinite(trace.loss).all() and np.isfinite(trace.extra["test_loss"][np.isfinite(
        trace.extra["test_loss"])]).all()
    assert trace.loss[-1, 0] != trace.loss[0, 0], f"{name} did not move"


# ---- each capability, with a real optimizer that needs it ---------------------------------------------------

def _rosenbrock_param():
    return torch.nn.Parameter(torch.tensor([-1.2, 1.0], dtype=torch.float64))


def _rosenbrock(x):
    return 100.0 * (x[1] - x[0] ** 2) ** 2 + (1.0 - x[0]) ** 2


def test_closure_is_handed_to_optimizers_that_need_it(monkeypatch):
    calls = []
    original = AnalyticClosure.__call__
    monkeypatch.setattr(AnalyticClosure, "__call__", lambda self: calls.append(1) or original(self))
    assert _entry("alig").needs_closure
    trace = run_loop(get_problem("rosenbrock"), get_optimizer("alig(max_lr=0.01)"), seed=0, steps=5)
    assert trace.status == ["done"] and len(calls) == 5


@pytest.mark.parametrize("spec", ["adahessian(lr=0.05)", "sophiah(lr=0.01, update_period=1)"])
def test_hessian_methods_get_create_graph_and_match_the_class(spec):
    """The loop engine backpropagates with create_graph=True (without it these classes raise) and reproduces
    the class driven by hand; its Hutchinson directions come from torch's global generator, which the engine
    seeds with derive_seed(seed, "optimizer") + t + 1 before step t (t = -1: construction; engines.step_rng)."""
    from optbench.randomness import derive_seed

    config = get_optimizer(spec)
    assert config.entry.create_graph and config.entry.needs_hessian
    trace = run_loop(get_problem("rosenbrock"), config, seed=0, steps=6, measure_cost=False)
    base = derive_seed(0, "optimizer")
    torch.manual_seed(base)
    x = _rosenbrock_param()
    opt = config.entry.build([x], config.hyperparams)
    expected = [x.detach().clone()]
    for t in range(6):
        x.grad = None
        _rosenbrock(x).backward(create_graph=True)
        torch.manual_seed(base + t + 1)
        opt.step()
        expected.append(x.detach().clone())
    np.testing.assert_allclose(trace.coords[:, 0], torch.stack(expected).numpy(), rtol=1e-12, atol=1e-300)


def _schedule_free_by_hand(config, steps):
    """(train points y_t, reported points x_t) of the class driven as its documentation says."""
    y = _rosenbrock_param()
    opt = config.entry.build([y], config.hyperparams)
    reported, trained = [], []
    for _ in range(steps):
        opt.train()
        y.grad = None
        _rosenbrock(y).backward()
        trained.append(y.detach().clone())
        opt.step()
        opt.eval()
        reported.append(y.detach().clone())
    return torch.stack(trained).numpy(), torch.stack(reported).numpy()


def test_schedule_free_records_the_point_it_reports():
    """Every recorded row (and the end) is the eval() point x_t; the loss recorded is f(x_t), not f(y_t)."""
    config = get_optimizer("schedulefreeadamw(lr=0.01)")
    assert config.entry.schedule_free
    trace = run_loop(get_problem("rosenbrock"), config, seed=0, steps=8, measure_cost=False)
    trained, reported = _schedule_free_by_hand(config, 8)
    np.testing.assert_allclose(trace.coords[1:, 0], reported, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(trace.end_x[0], reported[-1], rtol=1e-12)
    losses = np.array([float(_rosenbrock(torch.tensor(x))) for x in reported])
    np.testing.assert_allclose(trace.loss[1:, 0], losses, rtol=1e-12)
    assert not np.allclose(trace.coords[1:-1, 0], trained[1:])  # y_t ≠ x_t: recording y would be wrong


def test_schedule_free_on_a_network_records_the_reported_point(network_data):
    """The network loop engine records loss, gradient norm and test loss at the eval() weights: the same run
    with the capability switched off (what the engine did before) records the training weights instead; only
    the first two rows agree (x₀ = y₀; after one step x₁ = y₁ = z₁, its averaging weight c₁ being 1)."""
    from dataclasses import replace

    problem = get_problem(MLP)
    config = get_optimizer("schedulefreeadamw(lr=0.05)")
    trace = run_network(problem, config, seed=0, steps=6)
    assert trace.status == ["done"] and np.isfinite(trace.extra["test_loss"][-1, 0])
    unaware = type(config)(replace(config.entry, schedule_free=False), config.hyperparams, config.given)
    at_y = run_network(problem, unaware, seed=0, steps=6)
    np.testing.assert_allclose(trace.loss[:2, 0], at_y.loss[:2, 0], rtol=1e-12)
    assert not np.isclose(trace.loss[2:, 0], at_y.loss[2:, 0], rtol=1e-9).any()
    assert not np.isclose(trace.extra["test_loss"][-1, 0], at_y.extra["test_loss"][-1, 0], rtol=1e-9)


def test_lr_free_optimizers_search_a_multiplier():
    from optbench.tuning.spaces import DEFAULT_LR, LR_FREE_MULTIPLIER, parse_space, space_for

    for name in ("prodigy", "dadaptadam", "dadaptsgd"):
        assert _entry(name).lr_free
        assert space_for(get_optimizer(name), {}) == [LR_FREE_MULTIPLIER]
        assert "lr-free" in _entry(name).deviations
    assert space_for(get_optimizer("adam"), {}) == [DEFAULT_LR]
    given = parse_space("lr=0.5:2:log")
    assert space_for(get_optimizer("prodigy"), given) == [given["lr"]]  # an explicit --space still wins


def test_muon_puts_matrices_on_muon_and_the_rest_on_adamw(network_data):
    problem = get_problem(MLP)
    model = problem.make_model(0, torch.device("cpu"), torch.float64)
    config = get_optimizer("muon(lr=0.02, adamw_lr=0.001)")
    opt = config.entry.build(list(model.parameters()), config.hyperparams)
    groups = {g["use_muon"]: g for g in opt.param_groups}
    assert {id(p) for p in groups[True]["params"]} == {id(p) for p in model.parameters() if p.ndim >= 2}
    assert {id(p) for p in groups[False]["params"]} == {id(p) for p in model.parameters() if p.ndim < 2}
    assert (groups[True]["lr"], groups[False]["lr"]) == (0.02, 0.001)
    trace = run_network(problem, config, seed=0, steps=4)
    assert trace.status == ["done"] and trace.loss[-1, 0] != trace.loss[0, 0]


def test_a_schedule_scales_each_parameter_group(network_data):
    """Under an lr schedule Muon's group and its AdamW group keep their ratio (one lr for both would give the
    AdamW group Muon's 20× larger rate)."""
    from optbench.engines.recipe import set_scheduled_lr

    config = get_optimizer("muon(lr=0.02, adamw_lr=0.001)")
    model = get_problem(MLP).make_model(0, torch.device("cpu"), torch.float64)
    opt = config.entry.build(list(model.parameters()), config.hyperparams)
    set_scheduled_lr(opt, 0.01, config.lr, [g["lr"] for g in opt.param_groups])
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([0.0005, 0.01])
    trace = run_network(get_problem(MLP), config, seed=0, steps=4, recipe=Recipe("cosine"))
    assert trace.status == ["done"]


def test_matrix_only_methods_say_what_they_do_on_a_vector():
    """On a 2-D analytic problem (one vector) Muon's only group is its AdamW group, as its entry states."""
    entry = _entry("muon")
    assert "AdamW" in entry.matrix_only and any("meant for matrices" in c for c in entry.capabilities())
    config = get_optimizer("muon")
    x = _rosenbrock_param()
    opt = config.entry.build([x], config.hyperparams)
    assert [g["use_muon"] for g in opt.param_groups] == [False]
    assert _entry("soap").matrix_only and _entry("lars").doc.count("ndim > 1") == 1


# ---- papers' formulas ---------------------------------------------------------------------------------

def _adopt_paper(x0, grad, steps, lr, beta1, beta2, eps):
    """ADOPT, Algorithm 2 of Taniguchi et al. 2024 (arXiv:2411.02853), in float64: v₀ = g₀²; then
    m_t = β₁m + (1 − β₁) clip(g_t / max(√v_{t−1}, ε), c), x ← x − ηm_t, v_t = β₂v + (1 − β₂)g_t², with the clip
    bound c = s^(1/4) at the library's step count s = t + 1 (the documented deviation)."""
    x = np.array(x0, dtype=np.float64)
    path = [x.copy()]
    g = grad(x)
    v, m = g * g, np.zeros_like(x)
    path.append(x.copy())  # the first step only initialises v
    for t in range(1, steps):
        g = grad(x)
        c = (t + 1) ** 0.25
        m = beta1 * m + (1 - beta1) * np.clip(g / np.maximum(np.sqrt(v), eps), -c, c)
        x = x - lr * m
        v = beta2 * v + (1 - beta2) * g * g
        path.append(x.copy())
    return np.array(path)


def test_adopt_follows_its_paper():
    def grad(x):
        a, b = x
        return np.array([-400.0 * a * (b - a * a) - 2.0 * (1.0 - a), 200.0 * (b - a * a)])

    trace = run_loop(get_problem("rosenbrock"), get_optimizer("adopt(lr=0.01, betas=(0.8, 0.99))"), seed=0,
                     steps=30, measure_cost=False)
    expected = _adopt_paper([-1.2, 1.0], grad, 30, 0.01, 0.8, 0.99, 1e-6)
    np.testing.assert_allclose(trace.coords[:, 0], expected, rtol=1e-12, atol=1e-300)
    assert "checked against Algorithm 2" in _entry("adopt").deviations


def _schedule_free_adamw_paper(x0, grad, steps, lr, beta1, beta2, eps, library_bias_correction):
    """Schedule-Free AdamW, Algorithm 1 of Defazio et al. 2024 (arXiv:2405.15682), in float64, no warm-up, no
    weight decay: y_t = (1 − β₁)z_t + β₁x_t, v ← β₂v + (1 − β₂)g(y_t)², z ← z − γ_t g/(√v + ε),
    x ← (1 − c)x + cz with c = γ_t²/Σγ_i². The paper's γ_t = γ√(1 − β₂ᵗ); ``library_bias_correction`` applies
    the documented deviation instead: γ_t = γ in the weights and the step g/(√(v/(1 − β₂ᵗ)) + ε).
    Returns the x_t, the points the method reports."""
    x = np.array(x0, dtype=np.float64)
    z, v, weight_sum = x.copy(), np.zeros_like(x), 0.0
    path = [x.copy()]
    for t in range(1, steps + 1):
        y = (1 - beta1) * z + beta1 * x
        g = grad(y)
        v = beta2 * v + (1 - beta2) * g * g
        bc2 = 1 - beta2 ** t
        if library_bias_correction:
            gamma, step = lr, g / (np.sqrt(v / bc2 + 1e-15) + eps)
        else:
            gamma, step = lr * math.sqrt(bc2), g / (np.sqrt(v) + eps)
        z = z - gamma * step
        weight_sum += gamma ** 2
        c = gamma ** 2 / weight_sum
        x = (1 - c) * x + c * z
        path.append(x.copy())
    return np.array(path)


def _rosenbrock_grad(x):
    a, b = x
    return np.array([-400.0 * a * (b - a * a) - 2.0 * (1.0 - a), 200.0 * (b - a * a)])


@pytest.mark.parametrize("engine", ["loop", "batched"])
def test_schedule_free_adamw_follows_its_paper(engine):
    """β₂ = 0 makes the paper's bias correction 1, where the class must be Algorithm 1 itself; at β₂ = 0.999 it
    is Algorithm 1 with the documented deviation (and not the paper's weights)."""
    from optbench.engines.batched import run_batched

    def run(spec):
        config = get_optimizer(spec)
        if engine == "loop":
            return run_loop(get_problem("rosenbrock"), config, seed=0, steps=25, measure_cost=False).coords[:, 0]
        return run_batched(get_problem("rosenbrock"), [config], [0], 25, measure_cost=False).coords[:, 0]

    paper = _schedule_free_adamw_paper([-1.2, 1.0], _rosenbrock_grad, 25, 0.01, 0.9, 0.0, 1e-8, False)
    np.testing.assert_allclose(run("schedulefreeadamw(lr=0.01, betas=(0.9, 0.0))"), paper, rtol=1e-10)
    default = run("schedulefreeadamw(lr=0.01)")
    with_deviation = _schedule_free_adamw_paper([-1.2, 1.0], _rosenbrock_grad, 25, 0.01, 0.9, 0.999, 1e-8, True)
    np.testing.assert_allclose(default, with_deviation, rtol=1e-10)
    literal = _schedule_free_adamw_paper([-1.2, 1.0], _rosenbrock_grad, 25, 0.01, 0.9, 0.999, 1e-8, False)
    assert not np.allclose(default, literal, rtol=1e-6)


def test_muon_groups_split_given_parameter_groups_keeping_their_settings():
    import torch

    from optbench.optimizers.registry import muon_groups

    w, b, g = torch.zeros(3, 2), torch.zeros(3), torch.zeros(2)
    groups = muon_groups([{"params": [w, b], "weight_decay": 0.1}, {"params": [g], "weight_decay": 0.0}])
    assert [(len(x["params"]), x["use_muon"], x["weight_decay"]) for x in groups] == [
        (1, True, 0.1), (1, False, 0.1), (1, False, 0.0)]


def test_a_schedule_free_optimizer_on_a_batchnorm_model_is_refused_before_any_work():
    from optbench.errors import SpecError
    from optbench.sweep.spec import Sweep

    problem = SimpleNamespace(name="bn-net", label="bn-net", features=frozenset({"batchnorm-buffers"}), dim=10,
                              has_batch_size=False, kind="network")
    with pytest.raises(SpecError, match="schedule-free.*BatchNorm"):
        Sweep([problem], [get_optimizer("schedulefreeadamw")]).expand()
