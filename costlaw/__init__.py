"""costlaw: which attention configuration reaches a target loss most cheaply at a given context length.

One import namespace. This folder holds the command line; the project's other top-level folders are its
subpackages: costmodel/ is `costlaw.costmodel`, runs/ is `costlaw.runs`, and so on (SUBPACKAGES). An install
maps them (setup.py). A plain checkout that was never installed, such as a GPU host with torch alone, maps
them with the finder below, so `python -m costlaw ...` run from the checkout's root works as installed.
"""

from __future__ import annotations

import importlib.machinery
import sys
from pathlib import Path

SUBPACKAGES = ("costmodel", "runs", "sweeps", "fitting", "analysis")

_CHECKOUT = Path(__file__).resolve().parent.parent


class _CheckoutFinder:
    """`costlaw.<sub>` -> the checkout's top-level folder `<sub>/`, for the names in SUBPACKAGES only."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        prefix, _, sub = fullname.partition(".")
        if prefix != __name__ or sub not in SUBPACKAGES:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [str(_CHECKOUT)])


# First in line: the subpackages come from the checkout this file was loaded from, even where an editable
# install of another checkout would map them elsewhere (a run must not mix two trees' code).
if (_CHECKOUT / "setup.py").is_file() and _CheckoutFinder not in sys.meta_path:
    sys.meta_path.insert(0, _CheckoutFinder)
