"""The top-level folders install as subpackages of one namespace: `runs/` is `costlaw.runs`, and so on.

pyproject.toml holds the metadata; this file only derives the package list and the folder mapping from
`costlaw.SUBPACKAGES`, so a new sub-subpackage (a folder with an __init__.py) needs no edit here.
"""

import ast
from pathlib import Path

from setuptools import find_packages, setup


def subpackages() -> tuple[str, ...]:
    """costlaw/__init__.py's SUBPACKAGES, read without importing the package."""
    tree = ast.parse(Path(__file__).with_name("costlaw").joinpath("__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SUBPACKAGES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("costlaw/__init__.py defines no SUBPACKAGES")


FOLDERS = subpackages()
packages = ["costlaw"] + [f"costlaw.{top}" for top in FOLDERS]
packages += [f"costlaw.{top}.{sub}" for top in FOLDERS for sub in find_packages(top)]
setup(packages=packages, package_dir={"costlaw": "costlaw", **{f"costlaw.{top}": top for top in FOLDERS}})
