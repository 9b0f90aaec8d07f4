"""Builder: load results once, draw each requested figure where it applies, write the pages."""

from __future__ import annotations

import time
from pathlib import Path

from optbench.formatting import is_missing
from optbench.report import ANIMATION_FORMATS, STATIC_FORMATS
from optbench.report.figures import ANIMATED, FIGURES, Figure
from optbench.report.page import Section, summary_rows, write_html, write_markdown

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
                sections += self.draw(FIGURES.get(name))
            self.progress("writing pages", phases - 1, phases)
            sections += self._tuning()
            title = self.title or "optbench report"
            meta = self._meta(started)
            summary = summary_rows(data.table, data.display, data.rank_metric)
            write_html(stage / "index.html", title, meta, summary, sections)
            write_markdown(stage / "report.md", title, meta, summary, sections)
        return self.out / "index.html"

    def draw(self, figure: Figure) -> list[Section]:
        """The sections of one figure kind, where the formats and the results allow it."""
        if figure.needs is not None and not (self.animated if figure.needs == ANIMATED else self.static):
            return []
        if figure.applies is not None and not figure.applies(self.data):
            return []
        return figure.draw(self)

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

        assert self.data.display is not None  # set in ReportData.__post_init__
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
        body = [["—" if is_missing(v) else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in r]
                for r in table.itertuples(index=False, name=None)]
        protocols = ", ".join(sorted(table["protocol"].astype(str).unique()))
        note = (f"Every optimizer was tuned with the same protocol ({protocols}) and trial budget on each problem; "
                "failed trials (diverged) count against the budget. Each verdict is read from the study's first "
                "trials_used trials (its budget; trials_in_study counts the evaluated trials its storage holds). "
                "The comparison at the top re-runs each best configuration over fresh seeds.")
        return [Section("Tuning protocol and budget", tables=[("tuning studies", csv, md_table(head, body))],
                        note=note)]

    def problem_of(self, family: str):
        """The problem object of a family (its landscape, for races and trajectories)."""
        from optbench.problems import get_problem

        s = self.data.summary
        return get_problem(s.loc[s["family"] == family, "problem"].iloc[0])

    def title_for(self, problem: str) -> str:
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
