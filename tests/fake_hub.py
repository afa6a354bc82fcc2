"""Lay out a local Hugging Face Hub cache the way ``hf_hub_download`` writes it, for offline tests."""

from __future__ import annotations

import shutil
from pathlib import Path


def lay_out_repo(
    hub_cache: Path,
    repo_id: str,
    files: dict[str, Path | bytes],
    *,
    commit: str = "0" * 40,
    refs: tuple[str, ...] = ("main",),
) -> Path:
    """Write ``models--org--name/snapshots/<commit>/<file>`` and ``refs/<ref>`` under ``hub_cache``.

    Args:
        hub_cache: The cache root (``$HF_HOME/hub``).
        repo_id: ``org/name``.
        files: File name -> source path or bytes.
        commit: 40-hex commit hash of the snapshot.
        refs: Branch names that point at this commit.

    Returns:
        The snapshot directory.
    """
    repo_dir = hub_cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        target = snapshot / name
        if isinstance(src, bytes):
            target.write_bytes(src)
        else:
            shutil.copyfile(src, target)
    (repo_dir / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo_dir / "refs" / ref).write_text(commit)
    return snapshot
