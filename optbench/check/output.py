"""What ``optbench check`` hands to CI systems: JUnit XML and a Markdown summary for a PR comment.

Both read a verdict table of :func:`optbench.check.compare.compare` (one row per configuration and metric).
JUnit: one ``<testcase>`` per row, ``classname`` the configuration, ``name`` the metric; a failed row
carries a ``<failure>`` with the baseline, the new value and the allowed band.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optbench.check.compare import KEY, config_label
from optbench.formatting import fmt_change, fmt_value
from optbench.results import atomic_write_bytes


def fmt_band(row: Any) -> str:
    metric = row["metric"]
    return f"[{fmt_value(row['low'], metric, row['steps'])}, {fmt_value(row['high'], metric, row['steps'])}]"


def junit_xml(table, *, suite_name: str = "optbench check", properties: dict[str, Any] | None = None,
              time_s: float = 0.0) -> bytes:
    """JUnit XML: one test case per (configuration, metric); failures for the rows that did not pass."""
    import xml.etree.ElementTree as ET

    failures = int((~table["passed"]).sum()) if len(table) else 0
    root = ET.Element("testsuites", name="optbench check", tests=str(len(table)), failures=str(failures),
                      errors="0", time=f"{time_s:.3f}")
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(table)), failures=str(failures),
                          errors="0", skipped="0", time=f"{time_s:.3f}")
    if properties:
        props = ET.SubElement(suite, "properties")
        for name, value in properties.items():
            ET.SubElement(props, "property", name=str(name), value=str(value))
    for _, row in table.iterrows():
        case = ET.SubElement(suite, "testcase", classname=config_label(row), name=row["metric"], time="0")
        summary = (f"{row['metric']}: baseline {fmt_value(row['baseline'], row['metric'], row['steps'])}, "
                   f"new {fmt_value(row['new'], row['metric'], row['steps'])}, allowed {fmt_band(row)}, "
                   f"change {fmt_change(row['change_rel'])} ({row['direction']})")
        if not row["passed"]:
            failure = ET.SubElement(case, "failure", message=summary, type=f"regression ({row['direction']})")
            failure.text = f"{summary}\n{row['detail']}"
        else:
            ET.SubElement(case, "system-out").text = f"{summary}; {row['detail']}"
    ET.indent(root)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8")


def write_junit(path: str | Path, table, **kwargs: Any) -> Path:
    path = Path(path)
    atomic_write_bytes(path, junit_xml(table, **kwargs))
    return path


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_rows(table) -> list[str]:
    lines = ["| configuration | metric | baseline | new | allowed | change | verdict |",
             "|---|---|---:|---:|---|---:|---|"]
    for _, row in table.iterrows():
        m = row["metric"]
        lines.append("| " + " | ".join(_md_cell(c) for c in (
            config_label(row), m, fmt_value(row["baseline"], m, row["steps"]),
            fmt_value(row["new"], m, row["steps"]), fmt_band(row), fmt_change(row["change_rel"]),
            ("✅ " if row["passed"] else "❌ ") + row["verdict"])) + " |")
    return lines


def markdown_summary(table, *, baseline: str, new: str, tolerances: str, warnings: Sequence[str] = (),
                     figures: dict[tuple, Path] | None = None, base_dir: Path | None = None,
                     suite_name: str = "") -> str:
    """A PR-comment summary: the verdict, the regressions with their loss-curve figures, then every check.

    ``figures`` maps a configuration key (the KEY columns as a tuple) to a PNG; links are written relative
    to ``base_dir`` (the Markdown file's folder).
    """
    failed = table[~table["passed"]] if len(table) else table
    configs = failed[KEY].drop_duplicates() if len(failed) else failed
    title = f"optbench check{': ' + suite_name if suite_name else ''}"
    if len(failed):
        head = (f"## ❌ {title}: {len(failed)} regression{'s' if len(failed) != 1 else ''} in {len(configs)} "
                f"configuration{'s' if len(configs) != 1 else ''} ({len(table)} checks)")
    else:
        head = f"## ✅ {title}: behaviour holds ({len(table)} checks)"
    lines = [head, "", f"- baseline: `{baseline}`", f"- new: `{new}`", f"- tolerances: {tolerances}"]
    for w in warnings:
        lines.append(f"- ⚠️ {w}")
    if len(failed):
        lines += ["", "### Regressions", "", *_md_rows(failed)]
        lines += ["", "A deliberate change? Accept it by refreshing the baseline: `optbench baseline --suite "
                  "SUITE --out BASELINE_DIR`, and commit it with the change."]
        for key in configs.itertuples(index=False, name=None):
            fig = (figures or {}).get(key)
            if fig is None:
                continue
            link = os.path.relpath(fig, base_dir) if base_dir is not None else str(fig)
            label = config_label(dict(zip(KEY, key, strict=True)))
            lines += ["", f"**{_md_cell(label)}**", "", f"![loss curves: {_md_cell(label)}]({Path(link).as_posix()})"]
    lines += ["", f"<details><summary>All {len(table)} checks</summary>", "", *_md_rows(table), "", "</details>", ""]
    return "\n".join(lines)


def write_markdown(path: str | Path, text: str) -> Path:
    path = Path(path)
    atomic_write_bytes(path, text.encode())
    return path
