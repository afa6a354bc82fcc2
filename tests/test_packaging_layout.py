"""What ``pip install`` puts in site-packages: ``dvlta_metric`` and ``dvlta_metric_train``, never ``training``.

The training package lives in the repository's ``training/`` folder and installs as ``dvlta_metric_train``
(as open_clip ships ``open_clip_train``), mapped by ``[tool.setuptools] package-dir``; the packages are listed
explicitly, so a new subpackage of the library must be added to the list (checked here too).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")


@pytest.fixture(scope="module")
def setuptools_table() -> dict[str, Any]:
    """``[tool.setuptools]`` of pyproject.toml."""
    with (REPO / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["tool"]["setuptools"]


def _installed_top_level(table: dict[str, Any]) -> set[str]:
    return {name.split(".")[0] for name in table.get("packages", [])}


def test_no_top_level_training_package(setuptools_table: dict[str, Any]) -> None:
    assert "find" not in setuptools_table.get("packages", {}), "list the packages explicitly (no packages.find)"
    assert _installed_top_level(setuptools_table) == {"dvlta_metric", "dvlta_metric_train"}
    assert setuptools_table["package-dir"] == {"dvlta_metric_train": "training"}
    assert "training" not in setuptools_table.get("package-data", {})


def test_every_library_subpackage_is_listed(setuptools_table: dict[str, Any]) -> None:
    on_disk = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "dvlta_metric").rglob("__init__.py")}
    listed = {name for name in setuptools_table["packages"] if name.split(".")[0] == "dvlta_metric"}
    assert on_disk == listed, f"[tool.setuptools] packages must list exactly the library's packages: {sorted(on_disk)}"
    assert not [p for p in (REPO / "training").rglob("__init__.py") if p.parent != REPO / "training"], (
        "training/ has a subpackage: add it to [tool.setuptools] packages as dvlta_metric_train.<name>"
    )


def test_training_package_data_exists(setuptools_table: dict[str, Any]) -> None:
    for pattern in setuptools_table["package-data"]["dvlta_metric_train"]:
        assert list((REPO / "training").glob(pattern)), f"package-data pattern {pattern!r} matches nothing"
