"""`load_law_file(path)`: laws defined in a Python file with the public API (fitting.Law, fitting.LSELaw,
fitting.register_law, fitting.formula.formula_law), for `costlaw fit --law-file PATH`.

The file is run as a module (it is the user's own code, like a notebook cell); every law it registers and every
Law it binds to a module-level name is registered under its name, replacing what the same file registered in an
earlier load (so a notebook or a test can load an edited file again). A file that fails to run is one line naming
it, its line and the error. The content's sha256 goes into the fit options, so an edited file refits.

    # laws.py
    import numpy as np
    from costlaw.fitting import Law
    PURE = Law("pure-power", ("x",), ("A", "k"), lambda T, F: T[:, :1] + T[:, 1:2] * F[:, 0],
               theta_names=("log_A", "k"), to_params=lambda t: {"A": np.exp(t[..., 0]), "k": t[..., 1]},
               from_params=lambda p: np.array([np.log(p["A"]), p["k"]]), scales=("log", "identity"),
               grid={"log_A": [0.0, 1.0, 2.0], "k": [-1.0, -0.5, -0.1]}, formula="y = A*x^k")
"""

from __future__ import annotations

import hashlib
import runpy
import traceback
from pathlib import Path

from costlaw.costmodel.core.errors import CostlawError
from costlaw.fitting import law as law_mod
from costlaw.fitting.law import Law

_LOADED: dict[str, list[str]] = {}  # resolved path -> names it registered


def load_law_file(path) -> tuple[dict[str, Law], str]:
    """({name: Law} the file defines, sha256 of its content)."""
    p = Path(path)
    if not p.is_file():
        raise CostlawError(f"--law-file: no such file {str(path)!r}; give a Python file that defines laws")
    data = p.read_bytes()
    key = str(p.resolve())
    for name in _LOADED.pop(key, []):
        law_mod._REGISTRY.pop(name, None)
    before = dict(law_mod._REGISTRY)
    try:
        ns = runpy.run_path(str(p), run_name=f"costlaw_law_file_{p.stem}")
    except CostlawError as e:
        raise CostlawError(f"--law-file: {p.name}: {e}") from None
    except Exception as e:  # the user's code: any error is theirs to fix, reported in one line
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == str(p)]
        where = f" line {frames[-1].lineno}" if frames else ""
        raise CostlawError(f"--law-file: {p.name}{where}: {type(e).__name__}: {' '.join(str(e).split())[:200]}; "
                           "fix the file") from None
    found = {k: v for k, v in law_mod._REGISTRY.items() if before.get(k) is not v}
    for v in ns.values():
        if isinstance(v, Law) and v.name not in found:
            if v.name in before and before[v.name] is not v:
                raise CostlawError(f"--law-file: {p.name} defines a law named {v.name!r}, which is already "
                                   "registered; give it another name")
            found[v.name] = law_mod.register_law(v, replace=True)
    if not found:
        raise CostlawError(f"--law-file: {p.name} defines no law; bind a fitting.Law to a name or call register_law")
    _LOADED[key] = list(found)
    return found, hashlib.sha256(data).hexdigest()
