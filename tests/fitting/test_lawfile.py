"""--law-file: laws defined in a Python file with the public API, loaded by name, reloaded when edited."""

import numpy as np
import pytest

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting import fit, get_law, laws
from costlaw.fitting.lawfile import load_law_file

LAWS_PY = '''
import numpy as np
from costlaw.fitting import Law, formula_law, register_law

PURE = Law("pure-power-test", ("x",), ("A", "k"), lambda T, F: T[:, :1] + T[:, 1:2] * F[:, 0],
           theta_names=("log_A", "k"), to_params=lambda t: {"A": np.exp(t[..., 0]), "k": t[..., 1]},
           from_params=lambda p: np.array([np.log(p["A"]), p["k"]]), scales=("log", "identity"),
           grid={"log_A": [0.0, 1.0, 2.0], "k": [-1.0, -0.5, -0.1]}, formula="y = A*x^k")
register_law(formula_law("E + A/x**alpha", ("x",)))
'''


def test_a_law_file_defines_laws_by_name(tmp_path):
    path = tmp_path / "laws.py"
    path.write_text(LAWS_PY)
    found, sha = load_law_file(path)
    assert set(found) == {"pure-power-test", "formula(x): E + A/x**alpha"} and len(sha) == 64
    x = np.geomspace(1, 1e3, 10)
    res = fit("pure-power-test", x, 3.0 * x ** -0.4)
    assert res.params["k"] == pytest.approx(-0.4, abs=1e-8)
    # Loading the file again (edited) replaces what it registered before.
    path.write_text(LAWS_PY.replace("y = A*x^k", "y = A*x**k"))
    found2, sha2 = load_law_file(path)
    assert sha2 != sha and get_law("pure-power-test").formula == "y = A*x**k"


def test_law_file_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\nraise ValueError('nope')\n")
    with pytest.raises(CostlawError, match=r"--law-file: bad.py line 2: ValueError: nope; fix the file"):
        load_law_file(bad)
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(CostlawError, match="defines no law"):
        load_law_file(empty)
    with pytest.raises(CostlawError, match="no such file"):
        load_law_file(tmp_path / "missing.py")
    clash = tmp_path / "clash.py"
    clash.write_text("from costlaw.fitting import get_law, Law\nL = Law('chinchilla', ('x',), ('a',), None)\n")
    with pytest.raises(CostlawError, match="'chinchilla', which is already registered"):
        load_law_file(clash)
    assert "chinchilla" in laws() and get_law("chinchilla").params == ("A", "B", "E", "alpha", "beta")
