"""The model card: YAML front matter that metadata cannot break, and the sections built from metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dvlta_metric import DVLTAVQA


def _front_matter(card: str) -> str:
    assert card.startswith("---\n")
    return card[4 : card.index("\n---\n", 4) + 1]


HOSTILE_METADATA = {
    "license": "mit\ntags: hacked",
    "datasets": ["a: b", "- c", 'say "hi" \\ #x', "yes", "line\u2028break\x85", "emoji \U0001f600"],
    "results": {"KoNViD-1k": {"SROCC\nextra: 1": 0.5}},
}


def test_model_card_front_matter_is_escaped(tmp_path: Path, saved_tiny: tuple[Path, DVLTAVQA]) -> None:
    """Metadata cannot add keys to the YAML front matter or change its structure (checked without PyYAML)."""
    _, model = saved_tiny
    folder = model.save_pretrained(tmp_path / "card", metadata=HOSTILE_METADATA)
    front = _front_matter((folder / "README.md").read_text(encoding="utf-8"))
    keys, items = [], {}
    for line in front.splitlines():
        if line.startswith("  - "):
            items.setdefault(keys[-1], []).append(json.loads(line[4:]))  # each item is one quoted scalar
        else:
            key, _, value = line.partition(": ") if ": " in line else (line.rstrip(":"), "", "")
            keys.append(key)
            if value:
                items[key] = json.loads(value) if value.startswith('"') else value
    assert keys == ["library_name", "license", "tags", "datasets", "metrics"]
    assert items["license"] == "mit\ntags: hacked"
    assert items["datasets"] == HOSTILE_METADATA["datasets"]
    assert items["metrics"] == ["srocc\nextra: 1"]


def test_model_card_front_matter_parses_with_yaml(tmp_path: Path, saved_tiny: tuple[Path, DVLTAVQA]) -> None:
    yaml = pytest.importorskip("yaml")
    _, model = saved_tiny
    folder = model.save_pretrained(tmp_path / "card", metadata=HOSTILE_METADATA)
    doc = yaml.safe_load(_front_matter((folder / "README.md").read_text(encoding="utf-8")))
    assert set(doc) == {"library_name", "license", "tags", "datasets", "metrics"}
    assert doc["license"] == "mit\ntags: hacked" and doc["tags"][0] == "video-quality-assessment"
    assert doc["datasets"] == HOSTILE_METADATA["datasets"]
    assert doc["metrics"] == ["srocc\nextra: 1"]
