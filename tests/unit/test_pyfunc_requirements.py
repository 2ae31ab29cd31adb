"""The registered model ships its own code (pyfunc.MODEL_CODE) and pins what that code imports.

A plain MLflow user's environment is built from the model's requirements alone
(integration/test_pyfunc_model.py loads it where the project is not importable, but in this venv,
where every package is installed): a third-party import of the shipped code that is not in
``MODEL_REQUIREMENTS`` would only fail in the user's environment.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from rayestate import pyfunc

RAYESTATE = Path(pyfunc.__file__).parent
#: Imported by the shipped code but provided by MLflow itself (it pins its own version).
PROVIDED_BY_MLFLOW = {"mlflow"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_every_third_party_import_of_the_shipped_code_is_a_model_requirement():
    imported = set().union(*(_imported_roots(RAYESTATE / name) for name in pyfunc.MODEL_CODE))
    third_party = imported - set(sys.stdlib_module_names) - {"rayestate", "__future__"} - PROVIDED_BY_MLFLOW
    assert "xgboost" in third_party and "treelite" in third_party  # the scan sees the model's libraries
    assert third_party <= set(pyfunc.MODEL_REQUIREMENTS), third_party - set(pyfunc.MODEL_REQUIREMENTS)


def test_the_shipped_code_imports_only_shipped_rayestate_modules():
    for name in pyfunc.MODEL_CODE:
        tree = ast.parse((RAYESTATE / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rayestate."):
                assert f"{node.module.split('.')[1]}.py" in pyfunc.MODEL_CODE, f"{name} imports {node.module}"
