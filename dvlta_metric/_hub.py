"""Hugging Face Hub access: one wrapper around ``hf_hub_download`` with errors a user can act on.

All downloads go through :func:`huggingface_hub.hf_hub_download`, so the standard cache and its variables
(``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``) work as everywhere else.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from pathlib import Path

import huggingface_hub
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils import validate_repo_id

from .errors import CheckpointError, WeightsNotFoundError
from .version import __version__

LIBRARY_NAME = "dvlta-metric"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PROBE_TIMEOUT_S = 10.0
"""Longest wait for the Hub to accept a connection before a download is given up as offline."""


def _connect_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "no connection could be made" in the HTTP clients huggingface_hub has used."""
    errors: list[type[BaseException]] = []
    for module, names in (
        ("httpx2", ("ConnectError", "ConnectTimeout")),
        ("httpx", ("ConnectError", "ConnectTimeout")),
    ):
        with contextlib.suppress(ImportError):
            imported = __import__(module)
            errors += [getattr(imported, name) for name in names]
    with contextlib.suppress(ImportError):
        import requests

        errors += [requests.exceptions.ConnectionError, requests.exceptions.ConnectTimeout]
    return tuple(errors)


_CONNECT_ERRORS = _connect_errors()


def hub_reachable() -> bool:
    """Whether the Hub endpoint (``HF_ENDPOINT``) accepts a connection: one request, no retries.

    huggingface_hub retries a failed connection five times with growing waits (about 28 s in all) before it
    falls back to its cache or fails; this probe lets :func:`hub_download` decide at once. Any HTTP answer,
    an error status included, counts as reachable; only a refused or timed-out connection (or an unknown host)
    does not.

    Returns:
        ``False`` if no connection could be made within :data:`PROBE_TIMEOUT_S` seconds.
    """
    from huggingface_hub.utils import get_session

    try:
        get_session().head(huggingface_hub.constants.ENDPOINT, timeout=PROBE_TIMEOUT_S)
    except _CONNECT_ERRORS:
        return False
    except Exception:  # any other failure: let hf_hub_download meet it and report it in its own words
        return True
    return True


def check_repo_id(repo_id: object, *, what: str) -> str:
    """Check that ``repo_id`` is a valid Hub model repository id of the form ``org/name``.

    The form is checked here; the remaining rules are huggingface_hub's own
    (:func:`huggingface_hub.utils.validate_repo_id`), so an id that passes is one the Hub accepts.

    Args:
        repo_id: The repository id.
        what: How to name the value in the error, e.g. ``"'hf-hub:org/name'"``.

    Returns:
        ``repo_id`` unchanged.

    Raises:
        TypeError: If ``repo_id`` is not a string.
        ValueError: If it is not ``org/name`` or breaks the Hub's naming rules; the message says which.
    """
    if not isinstance(repo_id, str):
        raise TypeError(f"{what}: the repository id must be a string 'org/name', got {type(repo_id).__name__}")
    if not _REPO_ID.match(repo_id):
        raise ValueError(f"{what}: expected a repository id of the form 'org/name', got {repo_id!r}")
    try:  # the Hub's own rules (no '--' or '..', no leading or trailing '-' or '.', at most 96 characters, ...)
        validate_repo_id(repo_id)
    except hf_errors.HFValidationError as err:
        raise ValueError(f"{what}: invalid Hub repository id {repo_id!r}: {err}") from None
    return repo_id


def check_revision(revision: object, *, what: str) -> str | None:
    """Check a Hub revision (branch, tag or commit hash): the one place revision rules live.

    Args:
        revision: The revision, or ``None`` for the repository's default branch.
        what: How to name the value in the error, e.g. ``"create(): revision"``.

    Returns:
        ``revision`` unchanged.

    Raises:
        TypeError: If ``revision`` is neither a string nor ``None``.
        ValueError: If it is empty or holds ``@`` (which separates a revision from the repository id).
    """
    if revision is not None and not isinstance(revision, str):
        raise TypeError(f"{what} must be a string (branch, tag or commit) or None, got {revision!r}")
    if revision is not None and (not revision or "@" in revision):
        raise ValueError(f"{what} must be a branch, tag or commit hash, got {revision!r}")
    return revision


def hub_download(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Download (or find in the cache) one file of a Hub model repository.

    Args:
        repo_id: ``org/name``.
        filename: File in the repository.
        revision: Branch, tag or commit (default: ``main``).
        cache_dir: Hub cache to use instead of the standard one.

    Returns:
        Local path of the file.

    Raises:
        WeightsNotFoundError: The file is not cached and cannot be downloaded (offline, no network), or the
            repository, revision or file does not exist. The message names the repository, the revision, the
            cache path and what to do. Without a network (and without ``HF_HUB_OFFLINE``) this is known after
            one connection attempt (:func:`hub_reachable`), not after huggingface_hub's retries; a cached copy
            is then used as huggingface_hub itself would.
    """
    where = f"hf-hub:{repo_id}" + (f"@{revision}" if revision else "")
    if not huggingface_hub.constants.HF_HUB_OFFLINE and not hub_reachable():
        cached = huggingface_hub.try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        if isinstance(cached, str):
            return Path(cached)
        cache = str(cache_dir) if cache_dir is not None else huggingface_hub.constants.HF_HUB_CACHE
        raise WeightsNotFoundError(
            f"{where}: cannot get {filename!r}: it is not in the cache and the Hub "
            f"({huggingface_hub.constants.ENDPOINT}) could not be reached (no connection). Cache searched: {cache}. "
            "To fix: connect to the network (or set HF_ENDPOINT to a reachable mirror) and try again; on a machine "
            "without network set HF_HUB_OFFLINE=1 and copy a populated cache there (HF_HOME / HF_HUB_CACHE choose "
            "its location), or point create() at a directory with 'local-dir:/path'."
        )
    # Order matters: LocalEntryNotFoundError (not cached and not downloadable) subclasses EntryNotFoundError.
    try:
        path = huggingface_hub.hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache_dir,
            library_name=LIBRARY_NAME,
            library_version=__version__,
        )
    except hf_errors.LocalEntryNotFoundError:
        cache = str(cache_dir) if cache_dir is not None else huggingface_hub.constants.HF_HUB_CACHE
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            reason = "HF_HUB_OFFLINE is set, so nothing is downloaded, and the file is not in the cache"
            fix = "unset HF_HUB_OFFLINE (or set it to 0) on a machine with network access to download it once"
        else:
            reason = "it is not in the cache and the Hub could not be reached"
            fix = "connect to the network (or set HF_ENDPOINT to a reachable mirror) and try again"
        raise WeightsNotFoundError(
            f"{where}: cannot get {filename!r}: {reason}. Cache searched: {cache}. To fix: {fix}; "
            "or copy a populated cache there (HF_HOME / HF_HUB_CACHE choose its location), or point "
            "create() at a directory with 'local-dir:/path'."
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise WeightsNotFoundError(
            f"{where}: the Hub repository {repo_id!r} does not exist or is private "
            "(check the name; for a private repository log in with `hf auth login`)."
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise WeightsNotFoundError(
            f"{where}: revision {revision!r} does not exist in {repo_id!r} (use a branch, tag or commit hash)."
        ) from None
    except hf_errors.EntryNotFoundError:
        raise WeightsNotFoundError(f"{where}: the repository has no file {filename!r}.") from None
    except hf_errors.HFValidationError as err:
        raise WeightsNotFoundError(f"{where}: invalid repository id or revision: {err}") from None
    except hf_errors.HfHubHTTPError as err:
        raise WeightsNotFoundError(f"{where}: the Hub refused the download of {filename!r}: {err}") from None
    return Path(path)


def hub_directory(
    repo_id: str, filenames: tuple[str, ...], *, revision: str | None = None, cache_dir: str | Path | None = None
) -> Path:
    """Download (or find in the cache) some files of one repository revision and return the folder holding them.

    Args:
        repo_id: ``org/name``.
        filenames: Files in the repository, e.g. ``("config.json", "model.safetensors")``.
        revision: Branch, tag or commit (default: ``main``).
        cache_dir: Hub cache to use instead of the standard one.

    Returns:
        The cache's snapshot folder of that revision, which holds every file named.

    Raises:
        WeightsNotFoundError: As :func:`hub_download`, for the first file that cannot be had.
        CheckpointError: If the files come from different commits (the branch moved during the download).
    """
    folders = {hub_download(repo_id, name, revision=revision, cache_dir=cache_dir).parent for name in filenames}
    if len(folders) != 1:
        raise CheckpointError(
            f"hf-hub:{repo_id}: the files {', '.join(filenames)} came from different commits of {revision or 'main'} "
            "(it changed during the download); try again, or pin a commit hash"
        )
    return folders.pop()


def sha256_of(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file, read in chunks.

    Args:
        path: The file.
        chunk_size: Bytes read at a time.

    Returns:
        The digest, 64 lowercase hexadecimal characters.

    Raises:
        OSError: If the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str, *, what: str) -> None:
    """Check a downloaded file against its pinned SHA-256.

    Args:
        path: The file.
        expected: Expected hex digest.
        what: How to name the file in the error.

    Raises:
        CheckpointError: On mismatch; the file is never loaded then.
    """
    actual = sha256_of(path)
    if actual.lower() != expected.lower():
        raise CheckpointError(
            f"{what}: SHA-256 mismatch for {path}: expected {expected}, got {actual}. The cached file is "
            "corrupt or was tampered with and was not loaded; delete it from the cache so that it is "
            "downloaded again."
        )
