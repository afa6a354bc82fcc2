"""Packaging: the version and the changelog agree, declared dependencies are used, and the built sdist and
wheel carry what the package, the tests and the documentation need (``.ci/run`` also installs the wheel)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import dvlta_metric

REPO = Path(__file__).resolve().parents[1]
CHANGELOG = REPO / "docs" / "changelog.md"
VERSION_HEADING = re.compile(r"(\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?(?:\.post\d+)?(?:\.dev\d+)?)(?: \(\d{4}-\d{2}-\d{2}\))?")
"""A released version's heading text: the version, optionally followed by its release date ``(YYYY-MM-DD)``."""

IMPORT_NAMES = {"open_clip_torch": "open_clip", "huggingface_hub": "huggingface_hub"}
"""Distribution names whose import name is not the distribution name with ``-`` as ``_``."""


def newest_released_version(changelog: str) -> str:
    """The version of the first version heading (``## 1.2.3``) of a changelog.

    Second-level headings are either version headings, newest first, or one ``## Unreleased`` on top.

    Args:
        changelog: The Markdown text.

    Returns:
        The newest released version.

    Raises:
        ValueError: A second-level heading is neither, ``Unreleased`` is not the first one, or there is no
            version heading.
    """
    headings = [line[3:].strip() for line in changelog.splitlines() if line.startswith("## ")]
    versions = []
    for i, heading in enumerate(headings):
        if heading == "Unreleased":
            if i > 0:
                raise ValueError("'## Unreleased' must be the first section of the changelog")
            continue
        match = VERSION_HEADING.fullmatch(heading)
        if match is None:
            raise ValueError(f"changelog heading {heading!r} is neither 'Unreleased' nor 'X.Y.Z [(YYYY-MM-DD)]'")
        versions.append(match.group(1))
    if not versions:
        raise ValueError("the changelog has no version heading")
    return versions[0]


def test_newest_changelog_version_is_the_package_version() -> None:
    assert newest_released_version(CHANGELOG.read_text(encoding="utf-8")) == dvlta_metric.__version__


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# Changelog\n\n## Unreleased\n\n* x\n\n## 0.2.0 (2026-01-31)\n\n### Fixed\n\n## 0.1.0\n", "0.2.0"),
        ("# Changelog\n\n## 1.0.0rc1\n\n## 0.9.0\n", "1.0.0rc1"),
        ("# Changelog\n\n## Unreleased\n\n* x\n", ValueError),
        ("# Changelog\n\n## 0.1.0 (unreleased)\n", ValueError),
        ("# Changelog\n\n## 0.2.0\n\n## Unreleased\n", ValueError),
    ],
)
def test_changelog_parsing(text: str, expected: str | type[Exception]) -> None:
    if isinstance(expected, str):
        assert newest_released_version(text) == expected
    else:
        with pytest.raises(expected):
            newest_released_version(text)


def _project_table() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _imported_modules(root: Path) -> set[str]:
    """Top-level names of every absolute import in the ``.py`` files under ``root``."""
    found = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_every_declared_dependency_is_imported_by_the_library() -> None:
    requirements = _project_table()["dependencies"]
    names = [re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0] for req in requirements]
    imported = _imported_modules(REPO / "dvlta_metric")
    unused = [name for name in names if IMPORT_NAMES.get(name, name.replace("-", "_").lower()) not in imported]
    assert not unused, f"declared in pyproject.toml but never imported by dvlta_metric: {unused}"


def _checkout_files() -> list[str]:
    """The checkout's files as a fresh clone plus uncommitted work has them: tracked and untracked, not ignored.

    Skips the test outside a git checkout (e.g. in an unpacked sdist).
    """
    try:
        proc = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = [f for f in proc.stdout.splitlines() if (REPO / f).is_file()]
    if not files:
        pytest.skip("not a git checkout")
    return files


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """The sdist and the wheel ``python -m build`` makes of a clean copy of this checkout, and its files.

    The copy holds no build leftovers: setuptools would add every file a stale ``*.egg-info/SOURCES.txt``
    lists to the sdist.
    """
    pytest.importorskip("build")
    files = _checkout_files()
    src = tmp_path_factory.mktemp("src")
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel, files


def test_sdist_holds_every_file_of_the_checkout_but_ci(built: tuple[Path, Path, list[str]]) -> None:
    sdist, _, files = built
    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    missing = [f for f in files if not f.startswith(".") and f not in members]
    assert not missing, f"files missing from the sdist: {missing}"
    assert {"tests/conftest.py", "tests/data/golden_scores.json", "docs/index.md", "mkdocs.yml"} <= members


def test_wheel_holds_the_package_data_and_passes_twine(built: tuple[Path, Path, list[str]]) -> None:
    sdist, wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"dvlta_metric/py.typed", "dvlta_metric/assets/sample.mp4", "dvlta_metric/assets/ATTRIBUTION.md"} <= names
    labels = {
        re.sub(r"^[^/]+/", "", n) for n in names if re.fullmatch(r"[^/]+/labels/(?:[^/]+/labels|SOURCES)\.txt", n)
    }
    assert labels == {f"labels/{d}/labels.txt" for d in ("KoNViD", "LIVE_VQC", "YouTubeUGC")} | {"labels/SOURCES.txt"}
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)
    pytest.importorskip("twine")
    proc = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
