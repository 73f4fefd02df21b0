"""The one expression language (costmodel.core.expr): what it accepts, what it refuses, and that the same tree
evaluates on Python scalars and numpy arrays alike."""

import numpy as np
import pytest

from costlaw.costmodel.core import expr as E
from costlaw.costmodel.core.errors import CostlawError


def ev(text, **names):
    e = E.parse(text, "t")
    return E.evaluate(e, names.__getitem__, E.SCALAR_FUNCTIONS, "t")


@pytest.mark.parametrize("text, value", [
    ("1 + 2 * 3", 7), ("2 ** 10", 1024), ("7 // 2 + 7 % 2", 4), ("-x + +x", 0.0), ("exp(log(5))", 5.0),
    ("minimum(3, x)", 2.0), ("maximum(3, x)", 3), ("sqrt(16) + abs(-1)", 5.0), ("1 < x < 3", True),
    ("1 < x > 3", False), ("x == 2 and not x != 2", True), ("x > 5 or x < 3", True), ("1 if x > 1 else 0", 1),
    ("where(x > 1, 10, 20)", 10), ("pi > 3", True),
])
def test_scalars(text, value):
    assert ev(text, x=2.0) == pytest.approx(value)


def test_arrays_elementwise_logic_and_conditionals():
    x = np.array([0.5, 1.5, 2.5, 3.5])
    fns = {**E.SCALAR_FUNCTIONS, "where": np.where, "minimum": np.minimum}
    e = E.parse("x > 1 and x < 3 or x == 0.5", "t")
    np.testing.assert_array_equal(E.evaluate(e, {"x": x}.__getitem__, fns), [True, True, True, False])
    e = E.parse("not (1 < x < 3)", "t")
    np.testing.assert_array_equal(E.evaluate(e, {"x": x}.__getitem__, fns), [True, False, False, True])
    e = E.parse("x * 2 if x > 2 else -x", "t")
    np.testing.assert_array_equal(E.evaluate(e, {"x": x}.__getitem__, fns), [-0.5, -1.5, 5.0, 7.0])
    with pytest.raises(CostlawError, match="t: .*needs a where"):
        E.evaluate(e, {"x": x}.__getitem__, {}, "t")  # no where(): a conditional over arrays cannot be evaluated


def test_names_quoting_strings_and_dotted_paths():
    e = E.parse("`Training FLOP` / (6 * `Model Size`) + N", "--assign")
    assert e.names == ("Training FLOP", "Model Size", "N")
    assert E.evaluate(e, {"Training FLOP": 60.0, "Model Size": 2.0, "N": 1.0}.__getitem__) == 6.0
    e = E.parse("status == 'completed'", "--where", strings=True)
    assert E.evaluate(e, {"status": "completed"}.__getitem__) is True
    e = E.parse("model.d_model * 2", "f", dotted=True)
    assert e.names == ("model.d_model",) and E.evaluate(e, {"model.d_model": 64}.__getitem__) == 128
    assert E.split_assignment("D = `Training FLOP` / 6") == ("D", "`Training FLOP` / 6")
    assert E.split_assignment("`new col` = a") == ("new col", "a")


@pytest.mark.parametrize("text, pattern", [
    ("__import__('os')", "unknown function '__import__'"),
    ("x.__class__", "attribute access is not allowed"),
    ("x[0]", "Subscript is not allowed"),
    ("lambda: 1", "Lambda is not allowed"),
    ("[i for i in x]", "ListComp is not allowed"),
    ("exp(x=1)", "keyword or starred arguments"),
    ("'a' + x", "the constant 'a' is not allowed"),
    ("True", "the constant True"),
    ("x is None", "that comparison"),
    ("1 +", "does not parse"),
    ("", "empty expression"),
    ("`unbalanced + 1", "unbalanced backquote"),
    ("y + 1", "unknown name 'y'; known: x"),
])
def test_refused_with_one_line(text, pattern):
    with pytest.raises(CostlawError, match=pattern) as e:
        E.parse(text, "--where", names=["x"])
    assert str(e.value).startswith("--where: ") and "\n" not in str(e.value)


def test_runaway_powers_and_failures_are_one_line():
    with pytest.raises(CostlawError, match="exponent .* larger than 1000"):
        ev("10 ** 10 ** 10")
    with pytest.raises(CostlawError, match="t: 'log\\(x\\)' fails: math domain error"):
        ev("log(x)", x=-1.0)
    with pytest.raises(CostlawError, match="division by zero"):
        ev("1 / x", x=0.0)
    assert ev("10 ** 300") == 10 ** 300  # within the bound, Python's own arithmetic
    with pytest.raises(CostlawError, match="split_assignment|not NAME = EXPR"):
        E.split_assignment("a == b")


def test_callers_name_checks_and_constants():
    e = E.parse("E + A", "--formula", constants={})
    assert e.names == ("E", "A")
    e = E.parse("e + 1", "t")  # no `e` constant: Epoch and others name a parameter e
    assert e.names == ("e",)

    def only_lower(name):
        return None if name.islower() else f"{name!r} must be lower case"

    with pytest.raises(CostlawError, match="'Bad' must be lower case"):
        E.parse("ok + Bad", "t", names=only_lower)


def test_limits_bound_every_value_and_the_time():
    """A place that evaluates user text per item bounds magnitudes and time (sweep formulas use this)."""
    lim = E.Limits(magnitude=1e30, seconds=1.0)

    def bounded(text, **names):
        return E.evaluate(E.parse(text, "f"), names.__getitem__, E.SCALAR_FUNCTIONS, "f", limits=lim)

    assert bounded("2 ** 60 * 1000") == 2**60 * 1000
    for text, problem in [("((10 ** 1000) ** 1000) ** 1000", r"10 \*\* 1000 is beyond \+-1e\+30"),
                          ("(2 ** 60) * (2 ** 60) * (2 ** 60)", "an intermediate value reaches about 1e36"),
                          ("(-7) ** 999", r"\(-7\) \*\* 999 is beyond"),
                          ("1e300 / 1e290", "an intermediate value reaches 1e\\+300")]:
        with pytest.raises(CostlawError, match=f"^f: .* is out of bounds: {problem}"):
            bounded(text)
    assert E.evaluate(E.parse("10 ** 40", "f"), {}.__getitem__) == 10**40  # no limits: as before


def test_length_and_nesting_are_refused_in_one_line():
    with pytest.raises(CostlawError, match="f: the expression of 1201 characters is longer than 1000"):
        E.parse("1" + " + 1" * 300, "f", max_chars=1000)
    with pytest.raises(CostlawError, match="nests too deeply; write it flatter") as e:
        E.parse("-" * 5000 + "1", "f")
    assert "\n" not in str(e.value)
