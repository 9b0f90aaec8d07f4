"""Problems: analytic landscapes and small networks, in one registry looked up by spec."""

from optbench.problems.base import (
    PROBLEMS,
    ProblemEntry,
    get_problem,
    get_problem_entry,
    list_problems,
    register_problem,
)

__all__ = [
    "PROBLEMS", "ProblemEntry", "get_problem", "get_problem_entry",
    "list_problems", "register_problem",
]
