"""mkdocs hook: render the Sphinx roles that the library's Google-style docstrings use.

Docstrings say ``:func:`create``` or ``:class:`~dvlta_metric.config.ModelConfig```. mkdocstrings renders
them as ``:func:<code>create</code>``; this hook drops the role and links the name to its API entry (an
*optional* mkdocs-autorefs reference: a name the API reference does not render stays plain code).

Names are resolved without importing the library: the top-level definitions of every module of
``dvlta_metric`` are read with :mod:`ast`. A fully qualified name is used as is; a bare name (``create``,
``DVLTAVQA.save_pretrained``) resolves through the package's public names first, then through the one
module that defines it.
"""

from __future__ import annotations

import ast
import html
import re
from functools import lru_cache
from pathlib import Path

PACKAGE = "dvlta_metric"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

_ROLE = re.compile(
    r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const):<code>(?P<tilde>~?)(?P<body>[^<]+)</code>"
)
_LITERAL_MARKER = re.compile(r"(?<!:)::</p>(?=\s*<div class=\"(?:highlight|language-))")
_EXPLICIT = re.compile(r"^(?P<title>.*?)\s*&lt;(?P<target>[\w.]+)&gt;$")  # :meth:`title <target>`


@lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    """``{name: qualified identifier}`` for the public names and for names defined in exactly one module."""
    seen: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        module = ".".join(parts)
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError):
            continue
        for node in tree.body:
            names: list[str] = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            for name in names:
                if not name.startswith("_"):
                    seen.setdefault(name, set()).add(f"{module}.{name}")
    index = {name: next(iter(paths)) for name, paths in seen.items() if len(paths) == 1}
    public = _public_names()
    index.update({name: f"{PACKAGE}.{name}" for name in public})
    return index


def _public_names() -> list[str]:
    """``dvlta_metric.__all__``, read from the source."""
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return [ast.literal_eval(e) for e in node.value.elts]  # type: ignore[attr-defined]
    return []


def _identifier(target: str) -> str | None:
    if target.startswith(PACKAGE + "."):
        return target
    head, _, rest = target.partition(".")
    qualified = _index().get(head)
    if qualified is None:
        return None
    return f"{qualified}.{rest}" if rest else qualified


def _replace(match: re.Match[str]) -> str:
    body = match["body"].strip()
    explicit = _EXPLICIT.match(body)
    if explicit:
        target, shown = explicit["target"], explicit["title"]
    else:
        target = body
        shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
    if not re.fullmatch(r"[\w.]+", target):
        return f"<code>{shown}</code>"
    code = f"<code>{shown}</code>"
    identifier = _identifier(target)
    if identifier is None:
        return code
    return f'<autoref optional identifier="{html.escape(identifier)}">{code}</autoref>'


def on_page_content(html_text: str, **kwargs: object) -> str:
    """Rewrite docstring roles in a page's HTML (mkdocs ``on_page_content`` event).

    Also drops the reStructuredText literal-block marker: a paragraph ending in ``::`` before a code block
    ends in ``:``.
    """
    html_text = _LITERAL_MARKER.sub(":</p>", html_text)
    return _ROLE.sub(_replace, html_text)
