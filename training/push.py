"""Publish a trained model directory on the Hugging Face Hub and print its registry entry.

The directory is what ``training.train`` saved (``split_XX/best``): ``config.json`` (with the training
metadata and results), ``model.safetensors`` and the model card ``README.md`` that ``save_pretrained`` wrote
from that metadata. This command

1. checks the directory loads (its ``config.json`` is a DVLTA-VQA config),
2. fills the repository id into the model card's usage example,
3. ``HfApi.create_repo`` (``exist_ok``) and ``HfApi.upload_folder`` (those three files only),
4. prints the entry to add to ``dvlta_metric/registry.py``: the repository, the revision (the commit hash
   the upload returned, so the registry pins exactly these bytes) and the SHA-256 of ``model.safetensors``
   (checked after every download)::

       WeightSource("hub", repo_id="org/dvlta-vqa-konvid", revision="<commit>", sha256="<sha256>")

Log in first (``hf auth login``) or pass ``--token`` / set ``HF_TOKEN``.

Command line::

    python -m training.push --dir runs/konvid/split_00/best --repo your-org/dvlta-vqa-konvid \\
        --registry-name dvlta-vqa-konvid
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from huggingface_hub import errors as hf_errors

from dvlta_metric.checkpoint import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, read_config
from dvlta_metric.errors import CheckpointError, WeightsNotFoundError
from dvlta_metric.hub import sha256_of

UPLOADED_FILES: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
CARD_PLACEHOLDER = "hf-hub:ORG/NAME"


@dataclass(frozen=True)
class Published:
    """Where a model was published.

    Attributes:
        repo_id: Hub repository.
        revision: Commit hash of the upload.
        sha256: SHA-256 of ``model.safetensors``.
        url: Commit URL.
    """

    repo_id: str
    revision: str
    sha256: str
    url: str = ""

    def weight_source(self) -> str:
        """The ``WeightSource(...)`` expression for ``dvlta_metric/registry.py``."""
        return f'WeightSource("hub", repo_id="{self.repo_id}", revision="{self.revision}", sha256="{self.sha256}")'


def registry_snippet(published: Published, name: str | None = None) -> str:
    """Text telling where the entry goes in ``dvlta_metric/registry.py``.

    Args:
        published: The upload.
        name: Registry name the weights belong to (e.g. ``dvlta-vqa-konvid``).
    """
    target = f"the entry {name!r}" if name else "the model's entry"
    return (
        f"Add to dvlta_metric/registry.py ({target}: replace its WeightSource):\n"
        f"    {published.weight_source()}\n"
        f"Users then get these exact weights with dvlta_metric.create({(name or 'NAME')!r}); "
        f"until then: dvlta_metric.create('hf-hub:{published.repo_id}@{published.revision}')"
    )


def check_directory(directory: str | Path) -> dict[str, Any]:
    """Make sure a directory is a complete model directory.

    Returns:
        Its metadata.

    Raises:
        FileNotFoundError: If a file is missing.
        CheckpointError: If ``config.json`` is not a DVLTA-VQA config.
    """
    directory = Path(directory)
    missing = [f for f in UPLOADED_FILES if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory} lacks {missing}; push the folder training.train saved (split_XX/best) "
            "or one written by model.save_pretrained"
        )
    _, metadata = read_config(directory / CONFIG_NAME)
    return metadata


def push(
    directory: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    api: HfApi | None = None,
) -> Published:
    """Upload a model directory to a Hub model repository.

    Args:
        directory: The model directory.
        repo_id: ``org/name`` (created if it does not exist).
        private: Create the repository as private.
        token: Hub token (default: the logged-in one / ``HF_TOKEN``).
        commit_message: Commit message (default names the training results).
        api: An ``HfApi`` to use (default: a new one).

    Returns:
        Where it was published.
    """
    directory = Path(directory)
    metadata = check_directory(directory)
    digest = sha256_of(directory / WEIGHTS_NAME)
    api = api or HfApi(token=token)
    repo = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    final_id = str(getattr(repo, "repo_id", None) or repo_id)
    card = directory / CARD_NAME
    text = card.read_text(encoding="utf-8")
    if CARD_PLACEHOLDER in text:
        card.write_text(
            text.replace(CARD_PLACEHOLDER, f"hf-hub:{final_id}"), encoding="utf-8"
        )
    if commit_message is None:
        results = metadata.get("results") or {}
        shown = "; ".join(
            f"{name}: "
            + ", ".join(
                f"{k} {v:.4f}" for k, v in r.items() if isinstance(v, (int, float))
            )
            for name, r in results.items()
            if isinstance(r, dict)
        )
        commit_message = "Upload DVLTA-VQA weights" + (f" ({shown})" if shown else "")
    info = api.upload_folder(
        repo_id=final_id,
        folder_path=str(directory),
        repo_type="model",
        commit_message=commit_message,
        allow_patterns=list(UPLOADED_FILES),
    )
    revision = str(getattr(info, "oid", "") or "")
    if not revision:
        raise RuntimeError(
            "the upload returned no commit hash; check the repository on the Hub"
        )
    return Published(
        final_id, revision, digest, str(getattr(info, "commit_url", "") or "")
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Upload a trained directory and print its registry entry.

    Returns:
        0 on success, 2 for a bad directory, 1 when the Hub refused the upload.
    """
    p = argparse.ArgumentParser(
        prog="python -m training.push",
        description="Publish a trained model on the Hub.",
    )
    p.add_argument(
        "--dir",
        required=True,
        help="the model directory (e.g. runs/konvid/split_00/best)",
    )
    p.add_argument(
        "--repo", required=True, help="Hub repository org/name (created if needed)"
    )
    p.add_argument(
        "--registry-name",
        help="registry entry these weights are for, e.g. dvlta-vqa-konvid",
    )
    p.add_argument(
        "--private", action="store_true", help="create the repository as private"
    )
    p.add_argument("--token", help="Hub token (default: hf auth login / HF_TOKEN)")
    p.add_argument("--message", help="commit message")
    args = p.parse_args(argv)
    try:
        published = push(
            args.dir,
            args.repo,
            private=args.private,
            token=args.token,
            commit_message=args.message,
        )
    except (FileNotFoundError, CheckpointError, WeightsNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (hf_errors.HfHubHTTPError, OSError, RuntimeError) as err:
        print(
            f"error: the upload to {args.repo} failed: {err} (logged in? `hf auth login`)",
            file=sys.stderr,
        )
        return 1
    print(
        f"uploaded {args.dir} to https://huggingface.co/{published.repo_id} ({published.url or published.revision})"
    )
    print(registry_snippet(published, args.registry_name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
