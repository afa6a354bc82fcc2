"""Exceptions that name what went wrong with weights and what to do about it."""

from __future__ import annotations


class WeightsNotFoundError(FileNotFoundError):
    """Weights could not be found: not in the local Hub cache while offline, no such repo/revision/file,
    or no such local directory. The message names the repository, the cache path and what to try."""


class CheckpointError(ValueError):
    """A weights file or config exists but is unusable: wrong SHA-256, truncated or corrupt safetensors,
    a config for another architecture, or keys/shapes that do not match the model."""


class WeightsUnavailableError(ValueError):
    """A registry entry has no weights to load: trained weights not published yet, or a test configuration
    with random weights only. The message lists the alternatives, ``pretrained=False`` among them."""
