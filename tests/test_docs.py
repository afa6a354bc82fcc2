"""The documentation: its code examples run, the site builds offline in strict mode, generated pages are current.

How the code examples run
-------------------------
Every ```` ```python ```` block of ``docs/**/*.md`` and of ``README.md`` is executed, in page order, in one
namespace per page (so a block can use what an earlier block of the same page defined), inside a temporary
working directory that holds the files the examples name: ``clip.mp4``, ``a.mp4``, ``b.mp4`` and a
``videos/`` folder (small clips written with PyAV). The namespace starts with ``video`` (a ``(2, 12, 3, 96,
128)`` batch) and ``decoded`` (a ``(12, 3, 96, 128)`` video that requires grad), because README snippets use
those names for the user's own data.

The examples are written for the real models. To keep the run offline and fast, ``dvlta_metric.create`` (and
the CLI's reference to it) is replaced while a page runs by :func:`_substitute_create`:

* ``local-dir:`` names load for real (pages save a model and load it back);
* registry names whose trained weights are *not published* with ``pretrained=True`` go to the real
  ``create``, which raises its real error without downloading anything (pages show that error);
* every other name (``dvlta-vqa-zeroshot``, ``hf-hub:...``, ``dvlta-vqa`` with ``pretrained=False``, ...)
  becomes ``dvlta-vqa-tiny`` with ``pretrained=False``, keeping the other arguments (``as_loss``,
  ``precision``, configuration overrides); ``device="cuda"`` becomes the CPU when CUDA is absent.

``docs/export.md`` exports that tiny model, whose weights are those of the session's ``tiny_model``: its trace
(``dvlta_metric.export_program``) and the writing of its ONNX file (most of an export's time) are the session's
(conftest's ``tiny_export``, which ``tests/test_export.py`` checks) instead of new ones; everything else of
``export_model`` (the checks, the ``.pt2`` file, the temporary folder and the rename) runs as written.

``bash`` blocks are not executed, but every ``dvlta-metric ...`` command in them must parse with the CLI's
own parser, and every ``python -m dvlta_metric_train.<step> ...`` command (also in ``training/README.md``, which the
site includes) may only use flags that step's ``--help`` lists.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import json
import os
import re
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from video_files import write_clip

import dvlta_metric
import dvlta_metric._registry
import dvlta_metric.cli

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.rglob("*.md")) + [REPO / "README.md"]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _load(path: Path) -> Any:
    """Import a script of docs/ as a module, without putting docs/ on ``sys.path``."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses and the like look their module up
    spec.loader.exec_module(module)
    return module


gen_benchmarks = _load(DOCS / "gen_benchmarks.py")


def _blocks(path: Path, language: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every fenced block of ``language`` in a Markdown file."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) == language:
            line = text.count("\n", 0, match.start()) + 2
            found.append((line, match.group(2)))
    return found


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# ---------------------------------------------------------------------------------------------- examples
_real_create = dvlta_metric.create


def _substitute_create(name: str, **kwargs: Any) -> dvlta_metric.DVLTAVQA:
    """``create`` for the docs examples: the tiny model for every name that would download (see the module)."""
    if name.startswith("local-dir:"):
        return _real_create(name, **kwargs)
    if ":" not in name and kwargs.get("pretrained", True):
        try:
            kind = dvlta_metric.model_info(name).weights.kind
        except ValueError:
            kind = None
        if kind == "unpublished":
            return _real_create(name, **kwargs)  # raises the real "not published yet" error
    kwargs["pretrained"] = False
    kwargs.pop("revision", None)
    kwargs.pop("cache_dir", None)
    device = kwargs.get("device")
    if device is not None and torch.device(device).type == "cuda" and not torch.cuda.is_available():
        kwargs["device"] = "cpu"
    kwargs.setdefault("device", "cpu")
    return _real_create("dvlta-vqa-tiny", **kwargs)


@pytest.fixture(scope="module")
def example_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The video files the examples name."""
    root = tmp_path_factory.mktemp("docs_files")
    write_clip(root / "clip.mp4", frames=48, width=320, height=240)
    write_clip(root / "a.mp4", frames=24, width=160, height=96)
    write_clip(root / "b.mp4", frames=30, width=160, height=96)
    (root / "videos").mkdir()
    write_clip(root / "videos" / "one.mp4", frames=24, width=160, height=96)
    write_clip(root / "videos" / "two.mkv", frames=20, width=128, height=96)
    return root


@pytest.fixture
def docs_workdir(example_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory with the example files, the substituted ``create`` and a clean registry."""
    for item in example_files.iterdir():
        target = tmp_path / item.name
        if item.is_dir():
            target.mkdir()
            for sub in item.iterdir():
                (target / sub.name).symlink_to(sub)
        else:
            target.symlink_to(item)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dvlta_metric, "create", _substitute_create)
    monkeypatch.setattr(dvlta_metric.cli, "create", _substitute_create)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(dvlta_metric._registry, "_REGISTRY", dict(dvlta_metric._registry._REGISTRY))
    monkeypatch.setattr(dvlta_metric._registry, "_ALIASES", dict(dvlta_metric._registry._ALIASES))
    return tmp_path


def _reuse_the_session_export(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exports of a model with ``tiny_model``'s configuration and weights take the session's trace and ONNX file."""
    import dvlta_metric.export

    shared = request.getfixturevalue("tiny_export")
    tiny = request.getfixturevalue("tiny_model")
    real_program, real_write_onnx = dvlta_metric.export_program, dvlta_metric.export._write_onnx

    def same(model: Any) -> bool:
        if not isinstance(model, dvlta_metric.DVLTAVQA) or model.config != tiny.config:
            return False
        mine, theirs = model.state_dict(), tiny.state_dict()
        return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)

    def export_program(model: Any) -> Any:
        return shared.program if same(model) else real_program(model)

    def write_onnx(program: Any, model: Any, path: Path, metadata: dict[str, Any]) -> None:
        if program is shared.program and same(model) and "onnx" in shared.files:
            assert metadata == dvlta_metric.export.read_metadata(shared.files["onnx"])  # the same model's file
            path.write_bytes(shared.files["onnx"].read_bytes())
        else:
            real_write_onnx(program, model, path, metadata)

    monkeypatch.setattr(dvlta_metric, "export_program", export_program)
    monkeypatch.setattr(dvlta_metric.export, "_write_onnx", write_onnx)


PYTHON_PAGES = [p for p in PAGES if _blocks(p, "python")]


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=_rel)
def test_python_examples_run(
    page: Path, docs_workdir: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    code_of_page = "\n".join(code for _, code in _blocks(page, "python"))
    if page == DOCS / "export.md":
        _reuse_the_session_export(request, monkeypatch)
    for module in ("scipy", "matplotlib", "compressai", "onnxruntime"):
        if re.search(rf"^\s*(?:import|from) {module}\b", code_of_page, re.MULTILINE):
            pytest.importorskip(module)
    torch.manual_seed(0)
    namespace: dict[str, Any] = {
        "__name__": "__docs__",
        "video": torch.rand(2, 12, 3, 96, 128),
        "decoded": torch.rand(12, 3, 96, 128, requires_grad=True),
    }
    for line, code in _blocks(page, "python"):
        compiled = compile(code, f"{_rel(page)}:{line}", "exec")
        try:
            with torch.random.fork_rng():
                exec(compiled, namespace)
        except Exception as err:
            raise AssertionError(f"the example at {_rel(page)} line {line} failed: {err!r}\n{code}") from err


def test_every_page_is_checked() -> None:
    """Pages with Python examples exist, and the ones that show code the user runs are among them."""
    names = {_rel(p) for p in PYTHON_PAGES}
    for page in ("README.md", "docs/index.md", "docs/quickstart.md", "docs/interpreting-scores.md"):
        assert page in names


# ---------------------------------------------------------------------------------------------- commands
def _commands(text: str, marker: str) -> list[str]:
    """Shell commands containing ``marker`` in a bash block: continuations joined, comments dropped."""
    joined = text.replace("\\\n", " ")
    commands = []
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line.startswith("#"):
            continue
        for part in re.split(r"&&|;|\|\|", line):
            if marker in part:
                commands.append(part.strip())
    return commands


def _cli_commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for _, code in _blocks(page, "bash"):
            for command in _commands(code, "dvlta-metric "):
                found.append((_rel(page), command))
    return found


def test_cli_commands_in_docs_parse() -> None:
    commands = _cli_commands()
    assert len(commands) >= 10
    parser = dvlta_metric.cli.build_parser()
    for page, command in commands:
        words = shlex.split(command)
        argv = words[words.index("dvlta-metric") + 1 :]
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                parser.parse_args(argv)
        except SystemExit as exit_:
            assert exit_.code == 0, f"{page}: `{command}` does not parse"


def _parser_options(parser: Any) -> set[str]:
    options = set()
    for action in parser._actions:
        options.update(action.option_strings)
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            for sub in choices.values():
                options.update(_parser_options(sub))
    return options


def test_cli_reference_lists_every_flag_and_subcommand() -> None:
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    parser = dvlta_metric.cli.build_parser()
    for option in sorted(_parser_options(parser)):
        assert f"`{option}" in page or f"{option} " in page, f"cli.md does not document {option}"
    subcommands = next(a for a in parser._actions if isinstance(getattr(a, "choices", None), dict)).choices
    for name in subcommands:
        assert f"## `dvlta-metric {name}`" in page
    for status in ("| 0 |", "| 1 |", "| 2 |", "| 130 |"):
        assert status in page


def test_training_commands_use_existing_flags() -> None:
    sources = PAGES + [REPO / "training" / "README.md"]
    checked = 0
    helps: dict[str, str] = {}
    for page in sources:
        if not page.exists():
            continue
        for _, code in _blocks(page, "bash"):
            for command in _commands(code, "-m dvlta_metric_train."):
                module = re.search(r"-m (dvlta_metric_train\.\w+)", command).group(1)  # type: ignore[union-attr]
                if module not in helps:
                    out = io.StringIO()
                    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
                        importlib.import_module(module).main(["--help"])
                    helps[module] = out.getvalue()
                tail = command.split(module, 1)[1]
                for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", tail):
                    assert flag in helps[module], f"{_rel(page)}: {module} has no {flag} (`{command}`)"
                checked += 1
    assert checked >= 5


# ---------------------------------------------------------------------------------------------- the site
def _offline_build(site: Path) -> None:
    """``mkdocs build --strict`` into ``site``, in this process, with every network connection refused."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("the documentation build must not use the network")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        mp.setenv("NO_MKDOCS_2_WARNING", "1")
        mp.chdir(REPO)
        config = load_config(config_file=str(REPO / "mkdocs.yml"), strict=True, site_dir=str(site))
        config.plugins.on_startup(command="build", dirty=False)
        try:
            build(config)
        finally:
            config.plugins.on_shutdown()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    out = tmp_path_factory.mktemp("site")
    _offline_build(out)  # raises mkdocs.exceptions.Abort on any warning (strict)
    return out


def test_site_builds_strict_and_offline(site: Path) -> None:
    assert (site / "index.html").is_file()
    for page in PAGES[:-1]:
        if page.name == "README.md":
            continue
        html = site / page.relative_to(DOCS).with_suffix(".html")
        assert html.is_file(), f"{html} was not built"
    for html in site.rglob("*.html"):
        text = html.read_text(encoding="utf-8")
        for tag in re.findall(r"<(?:script|link|img)\b[^>]*>", text):
            assert not re.search(r"(?:src|href)=\"(?:https?:)?//", tag), f"{html.name}: external asset {tag}"
        assert "fonts.googleapis" not in text


def test_equations_render_with_the_vendored_katex(site: Path) -> None:
    assert (site / "assets" / "katex" / "katex.min.js").is_file()
    css = (site / "assets" / "katex" / "katex.min.css").read_text(encoding="utf-8")
    for font in re.findall(r"url\(([^)]+)\)", css):
        assert (site / "assets" / "katex" / font).is_file(), font
    page = (site / "components" / "temporal-context.html").read_text(encoding="utf-8")
    assert page.count('class="arithmatex"') >= 5
    assert "assets/katex-init.js" in page and "\\tag{6}" in page


def test_api_reference_documents_every_public_name(site: Path) -> None:
    ids: set[str] = set()
    for html in (site / "api").glob("*.html"):
        ids.update(re.findall(r'id="(dvlta_metric[\w.]*)"', html.read_text(encoding="utf-8")))
    missing = [name for name in dvlta_metric.__all__ if f"dvlta_metric.{name}" not in ids]
    assert not missing, f"not in the API reference: {missing}"
    modules = [
        "config",
        "_registry",
        "_hub",
        "_checkpoint",
        "video_io",
        "batch",
        "views",
        "fusion",
        "_factory",
        "model",
    ]
    modules += [f"branches.{p.stem}" for p in (REPO / "dvlta_metric" / "branches").glob("*.py") if p.stem != "__init__"]
    for module in modules:
        prefix = f"dvlta_metric.{module}"
        assert any(i == prefix or i.startswith(prefix + ".") for i in ids) or module in ("_factory", "model"), module
    for module in [m for m in modules if m.startswith("branches.")]:
        tree = ast.parse((REPO / "dvlta_metric" / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
        classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef) and not n.name.startswith("_")]
        for cls in classes:
            assert f"dvlta_metric.{module}.{cls}" in ids, f"dvlta_metric.{module}.{cls} is not in the API reference"


def test_architecture_figure_is_on_the_home_page(site: Path) -> None:
    home = (site / "index.html").read_text(encoding="utf-8")
    assert 'src="figures/architecture.svg"' in home
    assert (site / "figures" / "architecture.svg").is_file()


# ---------------------------------------------------------------------------------------------- generated
def test_benchmarks_page_is_up_to_date() -> None:
    expected = gen_benchmarks.render()
    current = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    assert current == expected, "docs/benchmarks.md is out of date: run python docs/gen_benchmarks.py"


def test_benchmarks_page_handles_any_result_files(tmp_path: Path) -> None:
    results = gen_benchmarks.load_results()
    bench = next(r for r in results.values() if gen_benchmarks._is_bench(r))
    cpu = {**bench, "device": "cpu", "device_name": "x86_64", "threads": 2, "precision": "fp32"}
    cpu.pop("score_files", None)
    cpu.pop("as_loss_backward", None)
    (tmp_path / "cpu_2cores_fp32.json").write_text(json.dumps(cpu))
    (tmp_path / "h200_cuda_bf16.json").write_text(json.dumps(bench))
    (tmp_path / "something_else.json").write_text(json.dumps({"note": "free form", "values": [1, 2.5]}))
    text = gen_benchmarks.render(tmp_path)
    assert "## cpu_2cores_fp32" in text and "## h200_cuda_bf16" in text and "## something_else" in text
    assert text.index("## cpu_2cores_fp32") < text.index("## h200_cuda_bf16")
    assert "[cpu_2cores_fp32](#cpu_2cores_fp32) | x86_64, 2 threads" in text
    assert "`values` | 1, 2.50" in text
    assert "No results yet" in gen_benchmarks.render(tmp_path / "empty")


def test_figures_script_runs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    make_figures = _load(DOCS / "figures" / "make_figures.py")
    assert make_figures.main(["--out", str(tmp_path)]) == 0
    for name in ("architecture.svg", "views.png"):
        made = tmp_path / name
        assert made.stat().st_size > 10_000, name
        assert (DOCS / "figures" / name).is_file(), f"docs/figures/{name} is not committed"
    assert os.path.getsize(DOCS / "figures" / "views.png") < 400_000


def test_coverage_figure_script_runs(tmp_path: Path) -> None:
    """docs/figures/make_coverage.py draws the Codec research page's figure; the committed one exists."""
    pytest.importorskip("matplotlib")
    make_coverage = _load(DOCS / "figures" / "make_coverage.py")
    args = ["--out", str(tmp_path), "--model", "dvlta-vqa-tiny", "--calls", "3", "--frames", "8", "--sizes", "540p"]
    assert make_coverage.main(args) == 0
    numbers = json.loads((tmp_path / "loss_coverage.json").read_text())
    positions = numbers["540p"]["positions"]
    assert len(positions) == 3 and positions == sorted(positions) and positions[-1] > positions[0]
    assert numbers["540p"]["scoring"][0] < positions[-1]
    assert (tmp_path / "loss_coverage.png").stat().st_size > 10_000
    for name in ("loss_coverage.png", "loss_coverage.json"):
        assert (DOCS / "figures" / name).is_file(), f"docs/figures/{name} is not committed"
