"""A user optimizer named by a relative file path is the file that path names now: another working directory,
or an edited file, is loaded afresh (the entry cache keys on the resolved file and its content)."""

from __future__ import annotations

import textwrap

from optbench.optimizers import get_optimizer

CLASS = textwrap.dedent('''
    import torch

    class MyOpt(torch.optim.SGD):
        """{doc}"""
        def __init__(self, params, lr=0.1):
            super().__init__(params, lr=lr)
''')


def test_the_same_relative_path_in_two_folders_is_two_classes(tmp_path, monkeypatch):
    for name in ("a", "b"):
        (tmp_path / name / "opt").mkdir(parents=True)
        (tmp_path / name / "opt" / "mine.py").write_text(CLASS.format(doc=f"folder {name}"))
    monkeypatch.chdir(tmp_path / "a")
    first = get_optimizer("opt/mine.py:MyOpt").entry
    monkeypatch.chdir(tmp_path / "b")
    second = get_optimizer("opt/mine.py:MyOpt").entry
    assert (first.doc, second.doc) == ("folder a", "folder b")
    assert first.source_sha != second.source_sha


def test_an_edited_file_is_loaded_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text(CLASS.format(doc="before"))
    assert get_optimizer("mine.py:MyOpt").entry.doc == "before"
    (tmp_path / "mine.py").write_text(CLASS.format(doc="after the edit"))
    assert get_optimizer("mine.py:MyOpt").entry.doc == "after the edit"
