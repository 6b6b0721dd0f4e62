"""The documentation site builds with warnings as errors, offline, with a current CLI reference."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_LIMIT_S = 60
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
QLEARN_IMPORT = re.compile(r"^\s*from (qlearn[\w.]*) import ([\w, ]+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess, float]:
    """One strict build for the whole module: (site dir, the finished process, seconds taken)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    site_dir = tmp_path_factory.mktemp("site")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=5 * BUILD_LIMIT_S,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    return site_dir, proc, time.perf_counter() - start


def test_strict_build_succeeds_in_time(
    site: tuple[Path, subprocess.CompletedProcess, float],
) -> None:
    site_dir, proc, seconds = site
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site_dir / "index.html").is_file()
    assert seconds < BUILD_LIMIT_S, f"mkdocs build took {seconds:.1f}s"


def test_cli_reference_lists_every_command(
    site: tuple[Path, subprocess.CompletedProcess, float],
) -> None:
    from typer.main import get_command

    from qlearn.cli import app

    site_dir, proc, _ = site
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = (site_dir / "cli" / "index.html").read_text(encoding="utf-8")
    assert "qlearn-cli-help" not in page  # the hook replaced its marker
    for name in get_command(app).commands:  # type: ignore[attr-defined]
        assert f"Usage: qlearn {name} [OPTIONS]" in page, name


def test_benchmarks_page_lists_every_script(
    site: tuple[Path, subprocess.CompletedProcess, float],
) -> None:
    site_dir, proc, _ = site
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = (site_dir / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert "qlearn-benchmarks" not in page  # the hook replaced its marker
    for script in (ROOT / "benchmarks").glob("*.py"):
        assert f"benchmarks/{script.name}" in page, script.name


def test_pages_render_code_and_math(site: tuple[Path, subprocess.CompletedProcess, float]) -> None:
    site_dir, proc, _ = site
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dqn = (site_dir / "algorithms" / "dqn" / "index.html").read_text(encoding="utf-8")
    assert 'id="qlearn.targets.td_target"' in dqn  # mkdocstrings pulled in the docstring
    assert 'id="qlearn.targets.double_q_target"' in dqn
    assert 'class="arithmatex"' in dqn  # equations left for KaTeX to typeset in the browser


def test_pages_link_no_web_fonts(
    site: tuple[Path, subprocess.CompletedProcess, float],
) -> None:
    site_dir, proc, _ = site
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page in site_dir.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"fonts\.(googleapis|gstatic)\.com", text), page


REMOTE = re.compile(r"^(https?:)?//", re.IGNORECASE)
KATEX_FILES = (
    "javascripts/katex/katex.min.js",
    "javascripts/katex/contrib/auto-render.min.js",
    "javascripts/katex/katex.min.css",
    "javascripts/katex/LICENSE",
    "javascripts/katex-render.js",
)


def test_pages_load_no_script_or_style_from_the_network(
    site: tuple[Path, subprocess.CompletedProcess, float],
) -> None:
    """Offline, the formulas used to show as raw LaTeX: MathJax came from a CDN."""
    site_dir, proc, _ = site
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pages = list(site_dir.rglob("*.html"))
    assert pages
    for page in pages:
        text = page.read_text(encoding="utf-8")
        scripts = re.findall(r"<script\b[^>]*\bsrc=\"([^\"]+)\"", text)
        styles = [
            href
            for tag in re.findall(r"<link\b[^>]*>", text)
            if re.search(r"\brel=\"?(stylesheet|preload|modulepreload)", tag)
            for href in re.findall(r"\bhref=\"([^\"]+)\"", tag)
        ]
        remote = [url for url in scripts + styles if REMOTE.match(url)]
        assert not remote, f"{page}: {remote}"
        assert re.search(r"<script[^>]*\bsrc=\"[^\"]*javascripts/katex/katex\.min\.js\"", text)
    for page in (site_dir / "assets").rglob("*.css"):  # the theme's own styles too
        assert not re.search(r"url\(\s*[\"']?(https?:)?//", page.read_text(encoding="utf-8"))


def test_site_ships_the_math_renderer(
    site: tuple[Path, subprocess.CompletedProcess, float],
) -> None:
    site_dir, proc, _ = site
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in KATEX_FILES:
        assert (site_dir / name).is_file(), name
    assert "MIT" in (site_dir / "javascripts/katex/LICENSE").read_text(encoding="utf-8")
    css = (site_dir / "javascripts/katex/katex.min.css").read_text(encoding="utf-8")
    fonts = re.findall(r"url\(([^)]+)\)", css)
    assert len(fonts) >= 20  # one per KaTeX face
    for font in fonts:
        assert not REMOTE.match(font), font
        assert (site_dir / "javascripts/katex" / font).is_file(), font


def test_python_examples_in_the_pages_import_what_exists() -> None:
    # The build cannot see into code blocks: check that every qlearn name they import exists.
    imports = [
        match.groups()
        for page in (ROOT / "docs").rglob("*.md")
        for block in PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))
        for match in QLEARN_IMPORT.finditer(block)
    ]
    assert imports, "no python code block imports from qlearn"
    for module, names in imports:
        for name in (n.strip() for n in names.split(",")):
            exec(f"from {module} import {name}", {})


def test_settings_page_lists_every_field(
    site: tuple[Path, subprocess.CompletedProcess, float],
) -> None:
    import dataclasses

    from qlearn.config import DQNConfig, TabularConfig

    site_dir, proc, _ = site
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = (site_dir / "settings" / "index.html").read_text(encoding="utf-8")
    assert "qlearn-settings" not in page  # the hook replaced its marker
    for cls in (DQNConfig, TabularConfig):
        for f in dataclasses.fields(cls):
            assert f"<td><code>{f.name}</code></td>" in page, f.name
    assert "<td>(0, 1]</td>" in page  # alpha's range, from its Range(0, 1, low_open=True)
