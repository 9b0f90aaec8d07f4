"""Builder: load results once, draw each requested figure where it applies, write the pages."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from optbench.report import ANIMATION_FORMATS, STATIC_FORMATS
from optbench.report.page import Section, summary_rows, write_html, write_markdown
from optbench.report.style import safe_name

REPORT_ENTRIES = ("index.html", "report.md", "figures", "tables")  # what a report directory holds


class Builder:
    def __init__(self, dirs: list[Path], out: Path, *, formats, figures, frames, fps, dpi, title, all_lrs,
                 metric, target=None, result_target=None, progress=None, heatmap_scale="shared"):
        self.dirs, self.out = dirs, out
        self.static = [f for f in formats if f in STATIC_FORMATS]
        self.animated = [f for f in formats if f in ANIMATION_FORMATS]
        self.figures, self.frames, self.fps, self.dpi = figures, frames, fps, dpi
        self.title, self.all_lrs, self.metric, self.target = title, all_lrs, metric, target
        self.result_target = result_target
        self.progress = progress or (lambda what, done, total: None)
        self.heatmap_scale = heatmap_scale

    def build(self) -> Path:
        from optbench.errors import UsageError
        from optbench.report.data import load
        from optbench.staging import staged_directory

        started = time.perf_counter()
        phases = 2 + len(self.figures)  # loading, each figure kind, the pages
        with staged_directory(self.out, REPORT_ENTRIES) as stage:  # the report appears whole, or not at all
            self.progress("loading results", 0, phases)
            data = load(self.dirs, all_lrs=self.all_lrs, target=self.target, metric=self.metric,
                        result_target=self.result_target)
            if data.summary.empty:
                raise UsageError(f"No complete runs in {', '.join(map(str, self.dirs))}; nothing to report.")
            self.data = data
            self.fig_dir, self.table_dir = stage / "figures", stage / "tables"
            self.fig_dir.mkdir()
            self.table_dir.mkdir()
            sections: list[Section] = self._deviations() + self._label_key()
            for done, name in enumerate(self.figures, start=1):
                self.progress(f"drawing {name}", done, phases)
                sections += getattr(self, f"_{name}")()
            self.progress("writing pages", phases - 1, phases)
            sections += self._tuning()
            title = self.title or "optbench report"
            meta = self._meta(started)
            summary = summary_rows(data.table, data.display, data.rank_metric)
            write_html(stage / "index.html", title, meta, summary, sections)
            write_markdown(stage / "report.md", title, meta, summary, sections)
        return self.out / "index.html"

    def _meta(self, started: float) -> list[str]:
        from optbench.formatting import plural
        from optbench.results import read_manifest

        s = self.data.summary
        meta = [f"{plural(len(s), 'run')}: {sweep_shape(s)}; from " + ", ".join(str(d) for d in self.dirs)]
        for d in self.dirs:
            manifest = read_manifest(d)
            for record in manifest.get("tuning", []) + manifest.get("sweeps", []):
                line = f"{d}: {record.get('command')}"
                if record.get("command") and line not in meta:
                    meta.append(line)
        from optbench.targets import mixed_targets_warning

        if self.target is not None:
            meta.append(f"steps to target recounted at target {self.target:g} (report --target)")
        elif warning := mixed_targets_warning(s):
            meta.append(f"Warning: {warning}")
        return meta

    def _label_key(self) -> list[Section]:
        """The key from each short label the figures and tables show to the configuration's full label."""
        import pandas as pd

        from optbench.labels import label_key
        from optbench.report.page import md_table

        rows = [list(pair) for pair in label_key(self.data.display)]
        if not rows:
            return []
        head = ["label", "configuration (full label, as in the data)"]
        csv = self.table_dir / "labels.csv"
        pd.DataFrame(rows, columns=head).to_csv(csv, index=False)
        note = ("Figures and tables name each configuration by its optimizer and what differs between the "
                "configurations shown, numbers to 4 significant digits; the results files keep the full label.")
        return [Section("Configuration labels", note=note,
                        tables=[("label key", csv, md_table(head, rows, left=tuple(head)))])]

    def _deviations(self) -> list[Section]:
        """Where each optimizer in these results differs from its paper, as the registry states it: a number is
        only as honest as the algorithm behind it."""
        import pandas as pd

        from optbench.report.page import DEVIATIONS_HEAD, deviation_rows, md_table

        rows = deviation_rows(self.data.summary["optimizer"].astype(str).tolist())
        csv = self.table_dir / "deviations.csv"
        pd.DataFrame(rows, columns=DEVIATIONS_HEAD).to_csv(csv, index=False)
        note = ("What each optimizer compared here does differently from the paper it cites (\"none known\": "
                "checked against the paper). Entries named after a library class plus -paper, such as lamb-paper, "
                "implement the paper's algorithm.")
        return [Section("Optimizers and their papers", note=note,
                        tables=[("optimizers in this report", csv, md_table(DEVIATIONS_HEAD, rows,
                                                                             left=tuple(DEVIATIONS_HEAD)))])]

    def _tuning(self) -> list[Section]:
        """How tuned results were tuned: protocol, equal budget, searched space and outcome per study (a
        ranking without its tuning budget is meaningless)."""
        import pandas as pd

        from optbench.report.page import md_table
        from optbench.results import read_manifest

        rows = []
        for d in self.dirs:
            for record in read_manifest(d).get("tuning", []):
                for study in record.get("studies", []):
                    trials = study.get("trials", {})
                    # manifests before trials_used counted every trial of the study in "trials"
                    used = study.get("trials_used", sum(trials.values()))
                    rows.append({
                        "problem": study.get("problem"), "optimizer": study.get("optimizer"),
                        "protocol": study.get("protocol", record.get("protocol")),
                        "budget": study.get("budget", record.get("budget")),
                        "trials_used": used, "trials_in_study": study.get("trials_in_storage", used),
                        "complete": trials.get("complete", 0),
                        "failed": trials.get("fail", 0) + trials.get("pruned", 0),
                        "space": ", ".join(study.get("space", [])),
                        "best": ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in study.get("best_params", {}).items()),
                        "best_tuning_loss": study.get("best_value"),
                        "steps": record.get("steps"),
                        "rerun_seeds": len(record.get("rerun_seeds", [])),
                    })
        if not rows:
            return []
        table = pd.DataFrame(rows)
        csv = self.table_dir / "tuning.csv"
        table.to_csv(csv, index=False)
        head = list(table.columns)
        body = [["—" if v is None or v != v else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in r]
                for r in table.itertuples(index=False, name=None)]
        protocols = ", ".join(sorted(table["protocol"].astype(str).unique()))
        note = (f"Every optimizer was tuned with the same protocol ({protocols}) and trial budget on each problem; "
                "failed trials (diverged) count against the budget. Each verdict is read from the study's first "
                "trials_used trials (its budget; trials_in_study counts the evaluated trials its storage holds). "
                "The comparison at the top re-runs each best configuration over fresh seeds.")
        return [Section("Tuning protocol and budget", tables=[("tuning studies", csv, md_table(head, body))],
                        note=note)]

    def _two_d(self) -> list[str]:
        s = self.data.summary
        return [p for p in self.data.families if int(s.loc[s["family"] == p, "dim"].iloc[0]) == 2
                and {"x0", "x1"} <= set(self.data.steps.columns)]

    def _tracks(self, family: str):
        from optbench.report.animate import Track
        from optbench.report.curves import config_label
        from optbench.report.data import best_configs, runs_of

        steps, tracks = self.data.steps, []
        for _, c in best_configs(self.data.table_all, family, self.data.rank_metric).iterrows():
            runs = runs_of(self.data.summary, c["problem"], c["optimizer_label"], c["lr"], c["batch_size"])
            run = runs.sort_values("seed").iloc[0]
            d = steps[steps["run_id"] == run["run_id"]].sort_values("step")
            xy = d[["x0", "x1"]].to_numpy(dtype=float)
            keep = np.isfinite(xy).all(axis=1)
            diverged = run["status"] == "diverged"
            label = config_label(self.data.short(c["optimizer_label"]), c["lr"], c["batch_size"])
            if diverged:
                label += f" — diverged at step {int(run['final_step'])}"
            tracks.append(Track(label, d["step"].to_numpy()[keep], xy[keep], self.data.styles[c["optimizer_label"]],
                                diverged))
        return [t for t in tracks if len(t.steps)]

    def _race(self) -> list[Section]:
        from optbench.report.animate import race

        if not self.animated:
            return []
        files = []
        for problem in self._two_d():
            tracks = self._tracks(problem)
            for fmt in self.animated:
                files.append(race(self._problem(problem), tracks, self.fig_dir / f"race_{safe_name(problem)}",
                                  fmt=fmt, frames=self.frames, fps=self.fps, dpi=self.dpi,
                                  title=self._title(problem)))
        note = "Each optimizer at its best learning rate, first seed; trail: the last steps, fading."
        return [Section("Race on the landscape", files, note=note)] if files else []

    def _trajectories(self) -> list[Section]:
        from optbench.report.animate import trajectories

        if not self.static:
            return []
        files = []
        for problem in self._two_d():
            files += trajectories(self._problem(problem), self._tracks(problem),
                                  self.fig_dir / f"trajectories_{safe_name(problem)}", formats=self.static,
                                  dpi=self.dpi, title=self._title(problem))
        return [Section("Trajectories", files)] if files else []

    def _curves(self) -> list[Section]:
        from optbench.report.curves import loss_curves

        if not self.static:
            return []
        files = []
        for problem in self.data.families:
            files += loss_curves(self.data, problem, self.fig_dir, formats=self.static, dpi=self.dpi,
                                 all_lrs=self.all_lrs, title=self._title(problem))
        return [Section("Loss curves", files)]

    def _sensitivity(self) -> list[Section]:
        from optbench.report.sensitivity import sensitivity

        if not self.static:
            return []
        files = []
        for problem in self.data.families:
            files += sensitivity(self.data, problem, self.fig_dir, formats=self.static, dpi=self.dpi,
                                 metric=self.metric, title=self._title(problem))
        return [Section("Learning-rate sensitivity", files)]

    def _grids(self) -> list[Section]:
        from optbench.report import grids as g

        summary = g.with_test_acc(self.data.summary, self.data.steps)
        found = g.grids(summary, self.metric)
        if not found:
            return []
        section = Section(f"Batch size × learning rate: {g.METRICS[self.metric][0]}",
                          note="Median over seeds; red frame / bold: best cell; hatched / 'diverged': most seeds "
                               "diverged; red line: best lr per batch size, against the linear and square-root "
                               "scaling rules." + (" Steps to target: " + g.grid_caption(found[0]) + "."
                                                   if self.metric in g.CENSORED else ""))
        comps = g.rule_comparisons(summary, found)
        if comps:
            section.note += " White diamonds: the lr a scaling recipe used at each batch size (η₀ best at B₀)."
        compared = {(c.tuned.problem, c.rule) for c in comps}  # shown in the comparison below, every base lr
        drawn = [grid for grid in found if (grid.problem, grid.optimizer) not in compared]
        scales = {problem: g.color_scale([grid for grid in drawn if grid.problem == problem])
                  for problem in dict.fromkeys(grid.problem for grid in drawn)} if self.heatmap_scale == "shared" \
            else {}
        if any(s is not None and s.shared > 1 for s in scales.values()):
            section.note += (" The heatmaps of one problem share one colour scale ('report --heatmap-scale each': "
                             "one scale per heatmap).")
        for grid in drawn:
            csv, _md_path, md = g.write_tables(grid, self.table_dir)
            shown = self.data.short(grid.optimizer)
            if self.static:
                rules = [c for c in comps if c.tuned is grid]
                section.figures += g.heatmap(grid, self.fig_dir, formats=self.static, dpi=self.dpi, rules=rules,
                                             scale=scales.get(grid.problem), title=shown)
            section.tables.append((f"{grid.problem}, {shown}", csv, md))
        return [section] + self._rule_comparison(comps)

    def _rule_comparison(self, comps) -> list[Section]:
        """Per-batch-size tuning against an lr-scaling recipe, when the results hold both."""
        from optbench.report import grids as g

        if not comps:
            return []
        title = g.METRICS[comps[0].tuned.metric][0]
        section = Section(
            "Batch size: tuned per batch size vs lr-scaling recipe",
            note=f"Black: the best {title} over the lr grid at each batch size (the lr tuned per batch size). "
                 "Colour: the recipe's runs, lr = η₀·(B/B₀)^p (with its warm-up), solid for the base lr η₀ that is "
                 "best at the base batch size B₀ (the recipe as practised: tune at B₀, then scale), dashed for the "
                 "other base lrs, dotted at the recipe's own value at B₀ (which the rule aims to keep); ×: "
                 f"diverged. Tables: '× tuned' is the recipe's {title} (above f*) over the tuned one, 1.00× where "
                 "the rule lands on the tuned optimum; '× at B₀' over its own value at B₀.")
        for problem in dict.fromkeys(c.tuned.problem for c in comps):
            mine = [c for c in comps if c.tuned.problem == problem]
            if self.static:
                section.figures += g.comparison_figure(mine, self.fig_dir, formats=self.static, dpi=self.dpi,
                                                       label=self.data.short)
            for comp in mine:
                csv, md = g.write_comparison(comp, self.table_dir)
                section.tables.append((g.comparison_caption(comp, label=self.data.short), csv, md))
        return [section]

    def _profiles(self) -> list[Section]:
        from optbench.report import profiles

        if not self.static or not profiles.applies(self.data):
            return []
        files = profiles.performance_profile(self.data, self.fig_dir, formats=self.static, dpi=self.dpi,
                                             title=self.title)
        if self.data.summary["f_min"].notna().any():
            files += profiles.ecdf(self.data, self.fig_dir, formats=self.static, dpi=self.dpi, title=self.title)
        return [Section("Across problems", files,
                        note="Each optimizer at its best configuration per problem; instances: problem × seed.")]

    def _problem(self, family: str):
        from optbench.problems import get_problem

        s = self.data.summary
        return get_problem(s.loc[s["family"] == family, "problem"].iloc[0])

    def _title(self, problem: str) -> str:
        return f"{self.title} — {problem}" if self.title else problem


def sweep_shape(summary) -> str:
    """What the runs cross, counted as a reader would: '1 problem at 6 batch sizes × 7 optimizer configurations ×
    13 learning rates × 3 seeds' (learning rates per configuration: 'up to N' where they differ)."""
    from optbench.formatting import plural

    families = summary["family"] if "family" in summary else summary["problem"]
    text = plural(families.nunique(), "problem")
    batch_sizes = summary["batch_size"].dropna().nunique()
    if batch_sizes > 1:
        text += f" at {plural(batch_sizes, 'batch size')}"
    text += f" × {plural(summary['optimizer_label'].nunique(), 'optimizer configuration')}"
    per_config = summary.groupby([families, summary["optimizer_label"], summary["batch_size"]],
                                 dropna=False)["lr"].nunique()
    if len(per_config):
        lo, hi = int(per_config.min()), int(per_config.max())
        text += f" × {'up to ' if lo != hi else ''}{plural(hi, 'learning rate')}"
    return text + f" × {plural(summary['seed'].nunique(), 'seed')}"
