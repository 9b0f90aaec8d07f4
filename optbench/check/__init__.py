"""CI regression checks, without typer or rich: ``compare`` (verdict tables, pandas only), ``output`` (JUnit XML,
Markdown), ``baseline`` (recording a suite's baseline; a check's orchestration: mode inference, warnings),
``branches`` (the hyperparameter-branch variants a suite check adds per optimizer).

Calling the package, ``optbench.check(new, baseline)``, is the Python twin of ``optbench check``
(:func:`optbench.api.check`): ``optbench.check`` names this package as soon as any of its modules is imported,
so the package itself is made callable rather than shadowing the function.
"""

from __future__ import annotations

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from optbench.api import check

        return check(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
