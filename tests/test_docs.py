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
    assert 'class="arithmatex"' in dqn  # equations left for MathJax


def test_pages_link_no_web_fonts(
    site: tuple[Path, subprocess.CompletedProcess, float],
) -> None:
    site_dir, proc, _ = site
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page in site_dir.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"fonts\.(googleapis|gstatic)\.com", text), page


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
