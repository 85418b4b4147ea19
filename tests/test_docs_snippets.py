"""Every ```python block of README.md and docs/*.md runs as printed, each in a fresh
interpreter (its own namespace) with a timeout, in an empty working directory.

A block that is illustrative on purpose (it names your model, your data or a GPU) is marked
by the line ``<!-- illustrative -->`` directly above its fence and skipped.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- illustrative -->"
TIMEOUT_S = 180  # per block; the README's blocks take seconds
_FENCE = re.compile(r"^(\s*)```+\s*([A-Za-z0-9_+-]*)")


def python_blocks(path: Path) -> list[tuple[int, str, bool]]:
    """``(line of the fence, code, illustrative)`` of every ```python block of ``path``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start, indent = m.group(2).lower(), i, len(m.group(1))
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1  # the closing fence
        if lang in ("python", "py"):
            marked = start > 0 and lines[start - 1].strip() == MARKER
            blocks.append((start + 1, "\n".join(body) + "\n", marked))
    return blocks


def _doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


CASES = [
    pytest.param(path, line, code, id=f"{path.relative_to(ROOT)}:{line}")
    for path in _doc_files()
    for line, code, marked in python_blocks(path)
    if not marked
]


def test_blocks_found():
    # The README's per-method examples are runnable blocks, not illustrative ones.
    runnable = [c for c in CASES if c.values[0].name == "README.md"]
    assert len(runnable) >= 4, "the README lost its runnable examples"


def test_marker_parsing(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(
        "text\n\n```python\nprint(1)\n```\n\n<!-- illustrative -->\n```python\nmy_model\n```\n"
        "  ```python\n  print(2)\n  ```\n```bash\nls\n```\n"
    )
    got = python_blocks(doc)
    assert got == [
        (3, "print(1)\n", False),
        (8, "my_model\n", True),
        (11, "print(2)\n", False),
    ]


def missing_modules(code: str) -> list[str]:
    """Top-level modules the block imports that are not installed (an optional extra such
    as ray): the block is skipped, naming them, rather than failed."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    # a module the block writes itself (``Path("factories.py").write_text(...)``) is not missing
    written = {n for n in names if f'"{n}.py"' in code or f"'{n}.py'" in code}
    return sorted(n for n in names - written if importlib.util.find_spec(n) is None)


def test_missing_modules():
    assert missing_modules("import numpy\nfrom no_such_pkg_xyz.sub import a\n") == [
        "no_such_pkg_xyz"
    ]
    assert missing_modules('Path("own_mod.py").write_text("")\nimport own_mod\n') == []


@pytest.mark.parametrize("path, line, code", CASES)
def test_snippet_runs(path: Path, line: int, code: str, tmp_path: Path):
    missing = missing_modules(code)
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (an optional extra)")
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env["MPLBACKEND"] = "Agg"
    try:
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{path.name}:{line}: the snippet ran past {TIMEOUT_S} s")
    assert proc.returncode == 0, (
        f"{path.relative_to(ROOT)}:{line} failed (exit {proc.returncode}); mark it "
        f"'{MARKER}' only if it is illustrative on purpose\n--- stderr ---\n{proc.stderr[-4000:]}"
    )
