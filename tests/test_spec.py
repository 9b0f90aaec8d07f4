"""The ``name(key=value)`` grammar: round trips, top-level splitting, rejections, float lists."""

from __future__ import annotations

import keyword
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optbench.errors import SpecError
from optbench.spec import Spec, format_spec, parse_float_list, parse_spec, parse_spec_list, split_top_level

# ---- strategies --------------------------------------------------------------------------------

names = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.\-]{0,12}(:[A-Za-z_][A-Za-z0-9_]{0,8})?\Z")
keys = st.from_regex(r"\A[a-z_][a-z0-9_]{0,8}\Z").filter(lambda k: not keyword.iskeyword(k))
floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1e-3, -1e-3, 3e-4, 1e16, -0.5])
scalars = (
    st.integers(-(10**12), 10**12)
    | floats
    | st.booleans()
    | st.none()
    | st.text(max_size=12)
    | st.sampled_from(["a,b", "f(x", "x)", "(,)", "it's", 'say "hi"', "a\\", "\\", "'", '"', "[{"])
)
values = st.recursive(scalars, lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=3).map(tuple)
                      | st.lists(inner, max_size=3), max_leaves=6)
kwargs_st = st.dictionaries(keys, values, max_size=4)


def _typed(value):
    """A structure that distinguishes True from 1 and 1 from 1.0 (plain == does not)."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_typed(v) for v in value])
    return (type(value).__name__, repr(value))


# ---- round trips -------------------------------------------------------------------------------

@given(names, kwargs_st)
def test_format_then_parse_round_trips(name, kwargs):
    text = format_spec(name, kwargs)
    spec = parse_spec(text)
    assert spec.name == name
    assert {k: _typed(v) for k, v in spec.kwargs.items()} == {k: _typed(v) for k, v in kwargs.items()}
    assert format_spec(spec.name, spec.kwargs) == text  # canonical text is a fixed point
    assert str(spec) == text


def _canonical(item):
    return format_spec(*item)


@given(st.lists(st.tuples(names, kwargs_st), min_size=1, max_size=4, unique_by=_canonical))
def test_spec_list_round_trips_and_splits_only_top_level(items):
    text = ",".join(format_spec(n, k) for n, k in items)
    specs = parse_spec_list(text)
    assert [str(s) for s in specs] == [format_spec(n, k) for n, k in items]


def test_examples_parse_to_literals():
    spec = parse_spec("adam(lr=1e-3, betas=(0.9, 0.99), amsgrad=True, eps=-1, s='a,(b', n=None, l=[1, 2])")
    assert spec == Spec("adam", {"lr": 0.001, "betas": (0.9, 0.99), "amsgrad": True, "eps": -1, "s": "a,(b",
                                 "n": None, "l": [1, 2]})
    assert isinstance(spec.kwargs["eps"], int) and isinstance(spec.kwargs["amsgrad"], bool)
    assert parse_spec("  sgd-momentum  ") == Spec("sgd-momentum", {})
    assert parse_spec("adam()") == Spec("adam", {})
    assert parse_spec("pkg.mod:MyOpt(lr=0.1)") == Spec("pkg.mod:MyOpt", {"lr": 0.1})
    assert format_spec("adam", {"lr": 0.01, "betas": (0.9,)}) == "adam(betas=(0.9,), lr=0.01)"


def test_spec_list_splits_on_top_level_commas_only():
    specs = parse_spec_list("adam(lr=1e-3,betas=(0.9,0.99)), sgd ,x(s='a,b', t=\"c,)d\", u=[1,2])")
    assert [s.name for s in specs] == ["adam", "sgd", "x"]
    assert specs[0].kwargs == {"lr": 1e-3, "betas": (0.9, 0.99)}
    assert specs[2].kwargs == {"s": "a,b", "t": "c,)d", "u": [1, 2]}
    assert split_top_level("a(b,c),d[e,f],g{h,i}") == ["a(b,c)", "d[e,f]", "g{h,i}"]
    assert split_top_level(r"x(s='a\',b'),y") == [r"x(s='a\',b')", "y"]


# ---- rejections --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, fragment", [
    ("adam(lr=__import__('os'))", "not a literal"),
    ("adam(lr=1e-3*2)", "not a literal"),
    ("adam(lr=x)", "not a literal"),
    ("adam(lr=(lambda: 1)())", "not a literal"),
    ("adam(1e-3)", "positional"),
    ("adam(lr=1, lr=2)", "twice"),
    ("adam(**{'lr': 1})", "'**'"),
    ("adam(lr=1", "end with ')'"),
    ("adam(lr=(1, 2)", "Cannot parse"),
    ("adam(lr=1))", "Cannot parse"),
    ("adam(lr=1)(x=2)", ""),
    ("adam(lr=1) + g(x=2)", ""),
    ("adam(lr 1)", "Cannot parse"),
    ("", "Empty"),
    ("   ", "Empty"),
    ("(lr=1)", "Bad name"),
    ("ad am", "Bad name"),
    ("adam;import os", "Bad name"),
])
def test_parse_spec_rejects(text, fragment):
    with pytest.raises(SpecError, match=None) as info:
        parse_spec(text)
    assert fragment in str(info.value)


@pytest.mark.parametrize("text, fragment", [
    ("adam,,sgd", "Empty"),
    ("adam,", "Empty"),
    (",adam", "Empty"),
    ("adam(lr=1e-3", "Unclosed bracket"),
    ("adam)lr=1(", "Unbalanced"),
    ("adam(s='x)", "Unclosed quote"),
    ("adam(lr=1e-3),adam(lr=0.001)", "listed twice"),
    ("adam(lr=[1,2}),sgd", ""),
])
def test_parse_spec_list_rejects(text, fragment):
    with pytest.raises(SpecError) as info:
        parse_spec_list(text)
    assert fragment in str(info.value)


# ---- float lists -------------------------------------------------------------------------------

def test_float_list_plain():
    assert parse_float_list("1e-3,1e-2", "lr") == [1e-3, 1e-2]
    assert parse_float_list(" 0.5 ", "lr") == [0.5]
    assert parse_float_list("1,2,3", "lr") == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("text", ["1e-4:1:5", "logspace(1e-4, 1, 5)", "logspace(1e-4,1,5)"])
def test_float_list_log_grid(text):
    grid = parse_float_list(text, "lr")
    assert grid == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0], rel=1e-12)


@given(st.floats(1e-8, 1e3), st.floats(1e-8, 1e3), st.integers(1, 30))
def test_float_list_log_grid_is_geometric_with_exact_ends(lo, hi, n):
    grid = parse_float_list(f"{lo!r}:{hi!r}:{n}", "lr")
    assert len(grid) == n
    assert grid[0] == lo  # the endpoints the user typed come back exactly (they end up in labels)
    if n > 1:
        assert grid[-1] == hi
        ratio = (hi / lo) ** (1 / (n - 1))
        for a, b in zip(grid, grid[1:]):
            assert b / a == pytest.approx(ratio, rel=1e-9)
    assert all(math.isfinite(v) and v > 0 for v in grid)


@pytest.mark.parametrize("text", ["", "a,b", "1e-3,", "0:1:3", "1e-3:1:0", "-1:1:3", "1:2", "1:2:3:4",
                                  "logspace(1, 2)", "1e-3:1:2.5"])
def test_float_list_rejects(text):
    with pytest.raises(SpecError, match="lr"):
        parse_float_list(text, "lr")
