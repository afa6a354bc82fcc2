"""The model card (``README.md``) written beside published weights, with Hub metadata."""

from __future__ import annotations

import json
from typing import Any

from .config import ModelConfig

CITATION = """@article{yu2025dvlta,
  title   = {Decoupled Vision-Language Modeling with Text-Guided Adaptation for Blind Video Quality Assessment},
  author  = {Yu, Dingquan and Wang, Mingxing and Zhou, Wei and Gabbouj, Moncef},
  journal = {arXiv preprint arXiv:2504.11733},
  year    = {2025}
}"""


def yaml_scalar(value: object) -> str:
    """A YAML double-quoted scalar that reads back as ``str(value)``, whatever characters it holds.

    Quotes, backslashes, line breaks (``\\n``, ``\\r``, U+0085, U+2028, U+2029), other control characters,
    the byte-order mark, non-characters and lone surrogates are escaped as in JSON (``\\"``, ``\\\\``,
    ``\\uXXXX``), which YAML's double-quoted style reads the same way; every other character is kept as is.
    So a value can neither end its line and inject a key (``"mit\\ntags: x"``) nor be read as another type
    (``"yes"``, ``"null"``, ``"a: b"``).

    Args:
        value: The value; anything but a string is converted with :class:`str`.

    Returns:
        The quoted scalar, e.g. ``"a: b"`` with its double quotes.
    """
    out = []
    for char in str(value):
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif (
            code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF or char in "\u2028\u2029\ufeff\ufffe\uffff"
        ):
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _yaml_list(key: str, values: list[str]) -> str:
    if not values:
        return ""
    return f"{key}:\n" + "".join(f"  - {yaml_scalar(v)}\n" for v in values)


def model_card(config: ModelConfig, metadata: dict[str, Any]) -> str:
    """Markdown model card with YAML front matter (library, licence, tags, datasets, metrics).

    Every value that goes into the YAML front matter is quoted with :func:`yaml_scalar`, so metadata cannot
    break the front matter or add keys to it.

    Args:
        config: The model's configuration.
        metadata: Training metadata; recognised keys: ``license``, ``datasets`` (list of names, or one name),
            ``results`` (``{dataset: {metric: value}}``), ``description``; everything else is listed as JSON.

    Returns:
        The card text.
    """
    raw_datasets = metadata.get("datasets") or []
    datasets = [str(d) for d in ([raw_datasets] if isinstance(raw_datasets, str) else raw_datasets)]
    results = metadata.get("results", {}) or {}
    metric_names = sorted({m.lower() for r in results.values() if isinstance(r, dict) for m in r})
    front = (
        "---\n"
        "library_name: dvlta-metric\n"
        f"license: {yaml_scalar(metadata.get('license', 'mit'))}\n"
        + _yaml_list("tags", ["video-quality-assessment", "blind-vqa", "clip", "pytorch", "dvlta-vqa"])
        + _yaml_list("datasets", datasets)
        + _yaml_list("metrics", metric_names or ["srocc", "plcc"])
        + "---\n\n"
    )
    lines = [
        f"# {config.name}",
        "",
        metadata.get("description") or config.description or "A DVLTA-VQA video quality model.",
        "",
        "Blind (no-reference) video quality assessment with DVLTA-VQA: scores in (0, 1), higher is better.",
        "",
        "## Usage",
        "",
        "```python",
        "import dvlta_metric",
        'model = dvlta_metric.create("hf-hub:ORG/NAME")  # this repository',
        'score = model("video.mp4")',
        "```",
        "",
        "## Model",
        "",
        f"* Branches: {', '.join(config.branches)}",
        f"* Joint dimension: {config.embed_dim}; fusion: {config.fusion}; logit scale: {config.logit_scale}",
        f"* Fragment view: {config.fragment_view.num_clips} clips of {config.fragment_view.clip_len} frames",
        f"* Frame view: {config.frame_view.num_frames} frames at {config.frame_view.crop}px",
        f"* Prompts: {config.prompts.positive!r} / {config.prompts.negative!r}",
    ]
    if datasets:
        lines += ["", "## Training data", "", *[f"* {d}" for d in datasets]]
    if results:
        cols = sorted({m for r in results.values() if isinstance(r, dict) for m in r})
        lines += ["", "## Results", "", "| dataset | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for name, res in results.items():
            if isinstance(res, dict):
                cells = [f"{res[c]:.4f}" if isinstance(res.get(c), (int, float)) else str(res.get(c, "")) for c in cols]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
    other = {k: v for k, v in metadata.items() if k not in ("license", "datasets", "results", "description")}
    if other:
        lines += ["", "## Training metadata", "", "```json", json.dumps(other, indent=2, default=str), "```"]
    lines += ["", "## Citation", "", "```bibtex", CITATION, "```", ""]
    return front + "\n".join(lines)
