"""Equation numbers in the docs and the code are the paper's (DVLTA-VQA, Yu et al. 2025, eqs. 1-13).

Every citation (``eq. 7``, ``Eqs. 10-13``, ``eqs. 1-4 and 12-13``, ``(eq. 4)``, ``\\tag{3}``) in the
``.py`` files of ``dvlta_metric/`` and ``training/`` and in the ``.md`` and ``.py`` files of ``docs/`` must
name equations 1 to 13. A citation of a single equation must also stand next to that equation's subject:
the text around it, from the previous citation (at most :data:`WINDOW` characters back) to the next one (at
most :data:`WINDOW` characters on), must contain one of the equation's keywords in :data:`EQUATIONS`; for a
``\\tag`` the context is the formula before it, in its own math block. That
catches a number moved onto the wrong subject ("temporal mean (eq. 3)", "text adapter (eq. 10)").
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIRST, LAST = 1, 13
WINDOW = 200

EQUATIONS: dict[int, tuple[str, ...]] = {
    1: ("embed", "e_{\\text{img}}", "z_t", "z_i", "z = ", "image tower", "encoder", "encode"),
    2: ("mean", "average", "pool", "\\frac{1}{t}"),
    3: ("adapter", "a(z)"),
    4: ("mix", "residual", "f_vbtc", "f_{\\text{vbtc}}", "ratio", "0.4"),
    5: ("stem", "3dcnn", "3-d", "3d", "f_ts", "f_{ts}"),
    6: ("tadaconv", "tada", "calibrat", "alpha_t", "w_b", "w_t", "aggregation"),
    7: ("cbam", "attention", "m_c", "m_s", "f_tcm", "f_{tcm}", "f_agg", "f_{agg}"),
    8: ("swin", "backbone", "grpb", "h_k"),
    9: ("head", "mlp", "pool", "f_bvfe", "f_{\\text{bvfe}}"),
    10: ("w_k", "weight", "cos"),
    11: ("fused", "f_fused", "sum", "fusion"),
    12: ("s_", "s+", "logit", "similarit", "prompt", "scale"),
    13: ("$q$", "q = ", "q =", "softmax", "exp", "probabilit", "score"),
}
"""Keywords (lower case) of each equation's subject; one of them must appear near a single-equation citation."""

_NUMBERS = r"\d+(?:\s*[-\u2013]\s*\d+)?(?:\s*(?:,|and|&)\s*\d+(?:\s*[-\u2013]\s*\d+)?)*"
CITATION = re.compile(
    rf"\b(?:eqs?\.|equations?)\s*\(?(?P<prose>{_NUMBERS})|\\tag\{{(?P<tag>{_NUMBERS})\}}",
    re.IGNORECASE,
)


def cited_numbers(numbers: str) -> list[int]:
    """Every equation a citation's number list names: ``"1-4 and 12-13"`` -> ``[1, 2, 3, 4, 12, 13]``."""
    found: list[int] = []
    for part in re.split(r"\s*(?:,|and|&)\s*", numbers.strip()):
        bounds = [int(x) for x in re.split(r"\s*[-\u2013]\s*", part)]
        found.extend(range(bounds[0], bounds[-1] + 1) if len(bounds) == 2 else bounds)
        if len(bounds) == 2 and bounds[1] < bounds[0]:
            found.append(-1)  # a descending range is an error too
    return found


def check_citations(text: str) -> list[str]:
    """Problems with the equation citations of ``text``: numbers outside 1-13, single equations off subject.

    Args:
        text: A file's text (Markdown or Python).

    Returns:
        One message per problem, with the line number; empty when every citation is right.
    """
    matches = list(CITATION.finditer(text))
    problems = []
    for i, match in enumerate(matches):
        numbers = match.group("prose") or match.group("tag")
        line = text.count("\n", 0, match.start()) + 1
        cited = cited_numbers(numbers)
        bad = [n for n in cited if not FIRST <= n <= LAST]
        if bad:
            problems.append(f"line {line}: {match.group(0)!r} names equations outside {FIRST}-{LAST}")
            continue
        if len(cited) != 1:
            continue
        start = max(matches[i - 1].end() if i else 0, match.start() - WINDOW)
        if match.group("tag"):  # a math block's tag: the formula it ends, back to the block's opening $$
            start = max(start, text.rfind("$$", 0, match.start()) + 2)
            end = match.start()
        else:
            end = min(matches[i + 1].start() if i + 1 < len(matches) else len(text), match.end() + WINDOW)
        context = (text[start : match.start()] + " " + text[match.end() : end]).lower()
        if not any(key in context for key in EQUATIONS[cited[0]]):
            problems.append(
                f"line {line}: {match.group(0)!r} does not stand next to eq. {cited[0]}'s subject "
                f"(none of {EQUATIONS[cited[0]]})"
            )
    return problems


def _files() -> list[Path]:
    files = sorted((REPO / "dvlta_metric").rglob("*.py")) + sorted((REPO / "training").rglob("*.py"))
    files += sorted((REPO / "docs").rglob("*.md")) + sorted((REPO / "docs").rglob("*.py"))
    return files


FILES = _files()


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_equation_citations(path: Path) -> None:
    problems = check_citations(path.read_text(encoding="utf-8"))
    assert not problems, f"{path.relative_to(REPO)}:\n" + "\n".join(problems)


def test_the_scan_finds_the_pages_and_the_citations() -> None:
    names = {str(p.relative_to(REPO)) for p in FILES}
    assert "docs/components/fusion.md" in names and "docs/figures/make_figures.py" in names
    assert any(CITATION.search(p.read_text(encoding="utf-8")) for p in FILES)


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("see eq. 7", [7]),
        ("Eq. 11", [11]),
        ("(eq. 4)", [4]),
        ("paper eqs. 10-13", [10, 11, 12, 13]),
        ("eq. 10-11", [10, 11]),
        ("eqs. 1-4 and 12-13", [1, 2, 3, 4, 12, 13]),
        ("eqs. 5, 6", [5, 6]),
        ("Z = x \\tag{3}", [3]),
        ("z \\tag{1-2}", [1, 2]),
        ("(paper eqs.\n10-13)", [10, 11, 12, 13]),
    ],
)
def test_citations_are_found(text: str, numbers: list[int]) -> None:
    (match,) = CITATION.finditer(text)
    assert cited_numbers(match.group("prose") or match.group("tag")) == numbers


@pytest.mark.parametrize(
    "text",
    [
        "the residual mix (eq. 14)",
        "eqs. 12-15",
        "eqs. 1-4 and 0",
        "x \\tag{20}",
        "eqs. 13-10",
    ],
)
def test_numbers_outside_the_paper_fail(text: str) -> None:
    assert check_citations(text)


@pytest.mark.parametrize(
    "text",
    [
        "the temporal mean (eq. 3)",
        "text adapter (eq. 10)\n$T' = 0.2 MLP(E) + 0.8 E$",
        "the CLIP adapter (eq. 2)",
        "the fragment backbone (eq. 5)",
        "the 3-D stem (eq. 8)",
        "$$\nZ = \\frac{1}{T} \\sum_t z_t \\tag{3}\n$$",
        "$$\nZ = \\frac{1}{T} \\sum_t z_t \\tag{3}\n$$\n\n$$\nF = a A(Z) + (1 - a) Z \\tag{4}\n$$",
    ],
)
def test_a_number_on_the_wrong_subject_fails(text: str) -> None:
    assert check_citations(text)


@pytest.mark.parametrize(
    "text",
    [
        "the temporal mean (eq. 2), the adapter (eq. 3) and the mix (eq. 4)",
        "fusion weights ``w_k`` (eq. 10)",
        "$$\nZ = \\frac{1}{T} \\sum_t z_t \\tag{2}\n$$",
        "$$\nF_{ts} = \\mathrm{3DCNN}(V) \\tag{5}\n$$",
        "text-guided fusion (eqs. 10-11)",
        "the text adapter (ours)",
    ],
)
def test_right_citations_pass(text: str) -> None:
    assert check_citations(text) == []
