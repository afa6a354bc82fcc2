"""Publish a trained model directory on the Hugging Face Hub and print its registry entry.

The directory is what ``dvlta_metric_train.train`` saved (``split_XX/best``): ``config.json`` (with the training
metadata and results), ``model.safetensors`` and the model card ``README.md`` that ``save_pretrained`` wrote
from that metadata. This command

1. checks the repository id (``org/name``) and that the directory loads: the three files are there and
   ``dvlta_metric.create("local-dir:<dir>", device="cpu")`` succeeds, which reads ``config.json`` and every
   tensor of ``model.safetensors`` strictly (a truncated or corrupt file is refused before any upload),
2. renders the model card for the upload with the repository id in its usage example (the placeholder
   ``hf-hub:ORG/NAME``, or the ``hf-hub:`` id of an earlier push); the local ``README.md`` is not modified,
3. ``HfApi.create_repo`` (``exist_ok``) and ``HfApi.create_commit`` of those three files,
4. prints the entry to add to ``dvlta_metric/_registry.py``: the repository, the revision (the commit hash
   the upload returned, so the registry pins exactly these bytes) and the SHA-256 of ``model.safetensors``
   (checked after every download)::

       WeightSource("hub", repo_id="org/dvlta-vqa-konvid", revision="<commit>", sha256="<sha256>")

``--dry-run`` does step 1 and 2 and prints what would be uploaded and the entry (with a placeholder for the
commit hash, known only after the upload), without any network access.

Log in first (``hf auth login``) or pass ``--token`` / set ``HF_TOKEN``. Exit status: 0 on success, 2 for
a bad directory or repository id, 1 when the Hub or the network refused the upload.

Command line::

    python -m dvlta_metric_train.push --dir runs/konvid/split_00/best --repo your-org/dvlta-vqa-konvid \\
        --registry-name dvlta-vqa-konvid --dry-run
    python -m dvlta_metric_train.push --dir runs/konvid/split_00/best --repo your-org/dvlta-vqa-konvid \\
        --registry-name dvlta-vqa-konvid
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub import errors as hf_errors

import dvlta_metric
from dvlta_metric._checkpoint import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, read_config
from dvlta_metric._hub import check_repo_id, sha256_of

UPLOADED_FILES: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
CARD_PLACEHOLDER = "hf-hub:ORG/NAME"
PENDING_REVISION = "<commit hash of the upload>"
# the usage example of the model card: dvlta_metric.create("hf-hub:<id>") with the placeholder or any id
_CARD_USAGE = re.compile(r'(dvlta_metric\.create\(")hf-hub:[^"\s]*(")')


class PushError(RuntimeError):
    """The Hub or the network refused the upload; the message says what happened."""


def _network_errors() -> tuple[type[BaseException], ...]:
    """What the Hub client raises when the Hub or the network fails.

    ``HfHubHTTPError`` for HTTP errors; ``OSError`` for connection errors of ``requests``-based versions and
    offline mode; the ``HTTPError`` base class of ``httpx`` (or of ``httpx2``), whose transport errors (no
    network, timeouts) are not ``OSError``, for the versions built on it; ``ValueError`` for what the Hub
    refuses as invalid (e.g. a malformed token).
    """
    errors: list[type[BaseException]] = [hf_errors.HfHubHTTPError, OSError, ValueError]
    for module in ("httpx", "httpx2"):
        try:
            error = getattr(importlib.import_module(module), "HTTPError", None)
        except ImportError:
            continue
        if isinstance(error, type) and issubclass(error, BaseException):
            errors.append(error)
    return tuple(errors)


NETWORK_ERRORS = _network_errors()


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
        """The ``WeightSource(...)`` expression for ``dvlta_metric/_registry.py``."""
        return f'WeightSource("hub", repo_id="{self.repo_id}", revision="{self.revision}", sha256="{self.sha256}")'


def registry_snippet(published: Published, name: str | None = None) -> str:
    """Text telling where the entry goes in ``dvlta_metric/_registry.py``.

    Args:
        published: The upload.
        name: Registry name the weights belong to (e.g. ``dvlta-vqa-konvid``).
    """
    target = f"the entry {name!r}" if name else "the model's entry"
    return (
        f"Add to dvlta_metric/_registry.py ({target}: replace its WeightSource):\n"
        f"    {published.weight_source()}\n"
        f"Users then get these exact weights with dvlta_metric.create({(name or 'NAME')!r}); "
        f"until then: dvlta_metric.create('hf-hub:{published.repo_id}@{published.revision}')"
    )


def check_directory(directory: str | Path) -> dict[str, Any]:
    """Make sure a directory is a complete model directory that loads.

    Loads it with ``dvlta_metric.create(f"local-dir:{directory}", device="cpu")``, which reads every tensor
    of ``model.safetensors`` strictly, so a truncated or corrupt file is refused here.

    Returns:
        Its metadata.

    Raises:
        FileNotFoundError: If the directory or a file is missing.
        dvlta_metric.CheckpointError: If ``config.json`` is not a DVLTA-VQA config or ``model.safetensors`` does
            not load (a ``ValueError``; the message names the file).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory} is not a folder; push the folder dvlta_metric_train.train saved (split_XX/best) "
            "or one written by model.save_pretrained"
        )
    missing = [f for f in UPLOADED_FILES if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory} lacks {missing}; push the folder dvlta_metric_train.train saved (split_XX/best) "
            "or one written by model.save_pretrained"
        )
    _, metadata = read_config(directory / CONFIG_NAME)
    dvlta_metric.create(f"local-dir:{directory}", device="cpu")  # reads the weights strictly
    return metadata


def render_card(text: str, repo_id: str) -> str:
    """The model card with ``hf-hub:<repo_id>`` in its usage example.

    Replaces the placeholder ``hf-hub:ORG/NAME`` that ``save_pretrained`` writes, or the ``hf-hub:`` id in
    ``dvlta_metric.create("hf-hub:...")`` of a card already filled in by an earlier push (or by hand).

    Args:
        text: The card (``README.md``).
        repo_id: The repository it is uploaded to.

    Returns:
        The card to upload (the text unchanged if it has no such example).
    """
    text = text.replace(CARD_PLACEHOLDER, f"hf-hub:{repo_id}")
    return _CARD_USAGE.sub(lambda m: f"{m.group(1)}hf-hub:{repo_id}{m.group(2)}", text)


def default_commit_message(metadata: dict[str, Any]) -> str:
    """``Upload DVLTA-VQA weights (<dataset>: srocc ..., plcc ...)`` from the training results in ``metadata``."""
    results = metadata.get("results") or {}
    shown = "; ".join(
        f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in r.items() if isinstance(v, (int, float)))
        for name, r in results.items()
        if isinstance(r, dict)
    )
    return "Upload DVLTA-VQA weights" + (f" ({shown})" if shown else "")


@dataclass(frozen=True)
class Prepared:
    """A checked model directory, ready to upload.

    Attributes:
        directory: The model directory.
        repo_id: Hub repository.
        sha256: SHA-256 of ``model.safetensors``.
        card: The model card to upload (rendered for ``repo_id``).
        commit_message: The commit message.
        sizes: Bytes of each uploaded file.
    """

    directory: Path
    repo_id: str
    sha256: str
    card: str
    commit_message: str
    sizes: dict[str, int]


def prepare(directory: str | Path, repo_id: str, *, commit_message: str | None = None) -> Prepared:
    """Check everything an upload needs, without network access.

    Args:
        directory: The model directory.
        repo_id: ``org/name``.
        commit_message: Commit message (default names the training results).

    Returns:
        What would be uploaded.

    Raises:
        TypeError: If ``repo_id`` is not a string.
        ValueError: For a malformed repository id, or a directory that does not load
            (``dvlta_metric.CheckpointError``).
        FileNotFoundError: If a file is missing.
    """
    check_repo_id(repo_id, what=f"repository {repo_id!r}")
    directory = Path(directory)
    metadata = check_directory(directory)
    card = render_card((directory / CARD_NAME).read_text(encoding="utf-8"), repo_id)
    sizes = {name: (directory / name).stat().st_size for name in UPLOADED_FILES}
    sizes[CARD_NAME] = len(card.encode("utf-8"))
    return Prepared(
        directory,
        repo_id,
        sha256_of(directory / WEIGHTS_NAME),
        card,
        commit_message if commit_message is not None else default_commit_message(metadata),
        sizes,
    )


def describe(prepared: Prepared, *, private: bool = False) -> str:
    """What :func:`push` would upload, for ``--dry-run``."""
    visibility = "private" if private else "public"
    where = f"https://huggingface.co/{prepared.repo_id} (a {visibility} model repository, created if needed)"
    lines = [f"would upload to {where}:"]
    for name in UPLOADED_FILES:
        note = {
            WEIGHTS_NAME: f", sha256 {prepared.sha256}",
            CARD_NAME: f", model card using dvlta_metric.create('hf-hub:{prepared.repo_id}')",
        }.get(name, "")
        lines.append(f"  {name} ({prepared.sizes[name]:,} bytes{note})")
    lines.append(f"commit message: {prepared.commit_message}")
    return "\n".join(lines)


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

    Everything is checked first (:func:`prepare`); the local directory is not modified (the model card is
    rendered for the upload).

    Args:
        directory: The model directory.
        repo_id: ``org/name`` (created if it does not exist).
        private: Create the repository as private.
        token: Hub token (default: the logged-in one / ``HF_TOKEN``).
        commit_message: Commit message (default names the training results).
        api: An ``HfApi`` to use (default: a new one).

    Returns:
        Where it was published.

    Raises:
        TypeError, ValueError, FileNotFoundError: From :func:`prepare`, before any network access.
        PushError: If the Hub or the network refused the upload.
    """
    prepared = prepare(directory, repo_id, commit_message=commit_message)
    return upload(prepared, private=private, token=token, api=api)


def upload(
    prepared: Prepared, *, private: bool = False, token: str | None = None, api: HfApi | None = None
) -> Published:
    """Upload what :func:`prepare` checked: ``create_repo`` (``exist_ok``), then one ``create_commit``.

    Args:
        prepared: The checked directory.
        private: Create the repository as private.
        token: Hub token (default: the logged-in one / ``HF_TOKEN``).
        api: An ``HfApi`` to use (default: a new one).

    Returns:
        Where it was published.

    Raises:
        PushError: If the Hub or the network refused the upload.
    """
    repo_id = prepared.repo_id
    try:
        api = api or HfApi(token=token)
        repo = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        final_id = str(getattr(repo, "repo_id", None) or repo_id)
        card = prepared.card if final_id == repo_id else render_card(prepared.card, final_id)
        operations = [
            CommitOperationAdd(path_in_repo=CONFIG_NAME, path_or_fileobj=str(prepared.directory / CONFIG_NAME)),
            CommitOperationAdd(path_in_repo=WEIGHTS_NAME, path_or_fileobj=str(prepared.directory / WEIGHTS_NAME)),
            CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card.encode("utf-8")),
        ]
        info = api.create_commit(
            repo_id=final_id, operations=operations, commit_message=prepared.commit_message, repo_type="model"
        )
    except NETWORK_ERRORS as err:
        raise PushError(f"the upload to {repo_id} failed: {type(err).__name__}: {err}") from err
    revision = str(getattr(info, "oid", "") or "")
    if not revision:
        raise PushError(f"the upload to {final_id} returned no commit hash; check the repository on the Hub")
    return Published(final_id, revision, prepared.sha256, str(getattr(info, "commit_url", "") or ""))


def main(argv: Sequence[str] | None = None) -> int:
    """Upload a trained directory and print its registry entry.

    Returns:
        0 on success, 2 for a bad directory or repository id, 1 when the Hub or the network refused the upload.
    """
    p = argparse.ArgumentParser(
        prog="python -m dvlta_metric_train.push", description="Publish a trained model on the Hub."
    )
    p.add_argument("--dir", required=True, help="the model directory (e.g. runs/konvid/split_00/best)")
    p.add_argument("--repo", required=True, help="Hub repository org/name (created if needed)")
    p.add_argument("--registry-name", help="registry entry these weights are for, e.g. dvlta-vqa-konvid")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--token", help="Hub token (default: hf auth login / HF_TOKEN)")
    p.add_argument("--message", help="commit message")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check everything and print what would be uploaded and the registry entry; no network access",
    )
    args = p.parse_args(argv)
    try:
        prepared = prepare(args.dir, args.repo, commit_message=args.message)
    except (FileNotFoundError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print("dry run: nothing was uploaded")
        print(describe(prepared, private=args.private))
        print("after the upload it would print (with the upload's commit hash):")
        print(registry_snippet(Published(prepared.repo_id, PENDING_REVISION, prepared.sha256), args.registry_name))
        return 0
    try:
        published = upload(prepared, private=args.private, token=args.token)
    except PushError as err:
        print(f"error: {err} (logged in? `hf auth login`; network reachable?)", file=sys.stderr)
        return 1
    print(f"uploaded {args.dir} to https://huggingface.co/{published.repo_id} ({published.url or published.revision})")
    print(registry_snippet(published, args.registry_name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
