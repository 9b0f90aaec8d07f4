"""Fair tuning: one Optuna study per (problem, optimizer), the same trial budget for every optimizer.

``spaces`` declares what is searched, ``protocols`` how (TPE, random search, a learning-rate grid), and
``study`` runs the ask/tell loop, evaluating a batch of trials as one batched-engine computation where the
optimizer has a batched rule. Optuna is imported only in this package.
"""

from optbench.tuning.protocols import PROTOCOLS, Protocol, get_protocol
from optbench.tuning.spaces import DEFAULT_LR, Dim, parse_space, space_for
from optbench.tuning.study import TuneResult, tune_one

__all__ = ["DEFAULT_LR", "PROTOCOLS", "Dim", "Protocol", "TuneResult", "get_protocol", "parse_space", "space_for",
           "tune_one"]
