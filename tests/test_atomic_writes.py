"""Every file the library writes goes through the one atomic writer (``datacredit._io``).

Two guards: a kill -9 in the middle of an overwrite leaves the previous file intact, and a
scan of the package's source finds no file writer outside ``_io.py`` / ``safetensors_io.py``
(so new code cannot bypass the atomic writer).
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import datacredit

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "datacredit"
WRITER_MODULES = {"_io.py", "safetensors_io.py"}  # the writers themselves

# Direct writes still allowed, by (file, function): none. Keep it that way.
PENDING: set[tuple[str, str]] = set()

_SAVE_CALLS = {"save", "savez", "savez_compressed", "savetxt"}  # numpy / torch writers
_WRITE_METHODS = {"write_text", "write_bytes", "tofile", "to_csv", "to_parquet", "savefig"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _open_mode(call: ast.Call) -> str:
    mode = call.args[1] if len(call.args) > 1 else None
    for kw in call.keywords:
        if kw.arg == "mode":
            mode = kw.value
    if mode is None:
        return "r"
    return mode.value if isinstance(mode, ast.Constant) and isinstance(mode.value, str) else "?"


class _WriterFinder(ast.NodeVisitor):
    """Direct file writes: ``np.save*``/``torch.save`` to anything but a handle from
    ``atomic_open``/an in-memory buffer, ``open(..., "w"/"a"/"x"/"+")``, ``os.open`` with
    write flags, and ``.write_text``/``.write_bytes``/``.tofile``/``.savefig`` to a path."""

    def __init__(self) -> None:
        self.found: list[tuple[str, int, str]] = []
        self._scope: list[str] = []
        self._safe: list[set[str]] = [set()]  # names bound to atomic handles or buffers

    def _visit_scope(self, node: ast.AST, name: str) -> None:
        self._scope.append(name)
        self._safe.append(set(self._safe[-1]))
        self.generic_visit(node)
        self._safe.pop()
        self._scope.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._visit_scope(node, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._visit_scope(node, node.name)

    def _bind_safe(self, target: ast.AST, value: ast.AST) -> None:
        if isinstance(target, ast.Name) and isinstance(value, ast.Call):
            func = _dotted(value.func)
            if func.split(".")[-1] in ("atomic_open", "BytesIO", "StringIO"):
                self._safe[-1].add(target.id)

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            if item.optional_vars is not None:
                self._bind_safe(item.optional_vars, item.context_expr)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._bind_safe(t, node.value)
        self.generic_visit(node)

    def _is_safe(self, arg: ast.AST | None) -> bool:
        return isinstance(arg, ast.Name) and arg.id in self._safe[-1]

    def visit_Call(self, node: ast.Call) -> None:
        func = _dotted(node.func)
        last = func.split(".")[-1]
        first = node.args[0] if node.args else None
        bad = None
        if func in ("open", "io.open", "builtins.open") or (
            last == "open"
            and isinstance(node.func, ast.Attribute)
            and func != "os.open"
            and not func.endswith("atomic_open")
            and func.split(".")[0] not in ("np", "zipfile")
        ):
            # builtin open and Path.open (mode is then the first argument)
            is_path_open = func not in ("open", "io.open", "builtins.open")
            mode = (
                _open_mode(node)
                if not is_path_open
                else (
                    first.value
                    if isinstance(first, ast.Constant) and isinstance(first.value, str)
                    else ("r" if first is None else "?")
                )
            )
            if set(mode) & set("wax+?"):
                bad = f"{func}(..., {mode!r})"
        elif func == "os.open":
            flags = ast.unparse(node.args[1]) if len(node.args) > 1 else ""
            if any(f in flags for f in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC")):
                bad = f"os.open(..., {flags})"
        elif last in _SAVE_CALLS and func.split(".")[0] in ("np", "numpy", "torch"):
            if not self._is_safe(first):
                bad = f"{func}(...)"
        elif last in _WRITE_METHODS and isinstance(node.func, ast.Attribute):
            if not self._is_safe(first) or last in ("write_text", "write_bytes"):
                bad = f".{last}(...)"
        if bad is not None:
            self.found.append((".".join(self._scope) or "<module>", node.lineno, bad))
        self.generic_visit(node)


def direct_writers(source: str) -> list[tuple[str, int, str]]:
    """``(qualified function, line, call)`` of each direct file write in ``source``."""
    finder = _WriterFinder()
    finder.visit(ast.parse(source))
    return finder.found


def test_scanner_finds_direct_writes():
    # The scanner itself must be able to fail: every way of writing in place is caught,
    # and writes through the atomic writer or to memory are not.
    src = textwrap.dedent(
        """
        import io, os
        import numpy as np
        from datacredit._io import atomic_open

        def bad(p, a):
            np.savez(p, a=a)
            np.save(p, a)
            open(p, "w").write("x")
            open(p, mode="ab")
            p.write_text("x")
            p.write_bytes(b"x")
            p.open("wb")
            a.tofile(p)
            os.open(p, os.O_WRONLY | os.O_CREAT)
            torch.save(a, p)

        def good(p, a, fig):
            with atomic_open(p) as fh:
                np.savez(fh, a=a)
            buf = io.BytesIO()
            np.save(buf, a)
            fig.savefig(buf, format="png")
            open(p).read()
            open(p, "rb").read()
            p.open().read()
            np.load(p)
        """
    )
    found = direct_writers(src)
    assert {f for f, _, _ in found} == {"bad"}
    assert len(found) == 10, found


def test_no_direct_file_writes_in_the_package():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in WRITER_MODULES:
            continue
        for func, line, call in direct_writers(path.read_text()):
            if (rel, func) not in PENDING:
                found.append(f"{rel}:{line} in {func}: {call}")
    assert not found, (
        "files must be written through datacredit._io (atomic_open, atomic_save_npz, "
        "atomic_save_npy, atomic_write_text):\n" + "\n".join(found)
    )


def test_pending_entries_still_exist():
    # Once a branch converts its file, its PENDING entry must go (the list only shrinks).
    present = set()
    for rel, _func in PENDING:
        path = PACKAGE / rel
        if path.exists():
            present |= {(rel, f) for f, _, _ in direct_writers(path.read_text())}
    stale = PENDING - present
    if stale:
        pytest.fail(f"PENDING lists writers that are gone (remove them): {sorted(stale)}")


# ----------------------------------------------------------------------------- kill -9
_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from datacredit import _io

    path, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for version in range(1, 1_000_000):
        a = np.full(n, version, dtype=np.int32)
        print(f"start {version}", flush=True)
        if kind == "npz":
            _io.atomic_save_npz(path, {"a": a, "version": np.array(version)})
        elif kind == "npy":
            _io.atomic_save_npy(path, a)
        else:
            _io.atomic_write_text(path, f"{version}\\n" + "x" * n + f"\\n{version}\\n")
        print(f"done {version}", flush=True)
    """
)


def _version(path: Path, kind: str, n: int) -> int:
    """The version a complete file holds; AssertionError if the file is damaged."""
    if kind == "text":
        head, body, tail = path.read_text().split("\n")[:3]
        assert head == tail and body == "x" * n, "truncated text file"
        return int(head)
    if kind == "npy":
        a = np.load(path, allow_pickle=False)
        assert a.shape == (n,) and (a == a[0]).all(), "damaged .npy"
        return int(a[0])
    with np.load(path, allow_pickle=False) as z:
        a, v = z["a"], int(z["version"])
    assert a.shape == (n,) and (a == v).all(), "damaged .npz"
    return v


def _write_in_progress(directory: Path, path: Path, full: int) -> bool:
    try:
        if path.stat().st_size < full:  # an in-place writer truncated the target
            return True
        return any(
            p.name.startswith(f".{path.name}.") and 0 < p.stat().st_size < full
            for p in directory.iterdir()
        )
    except FileNotFoundError:  # a temporary file renamed under our feet
        return False


@pytest.mark.parametrize("kind", ["npz", "npy", "text"])
def test_kill_9_during_an_overwrite_keeps_the_previous_file(tmp_path, kind):
    n = 8_000_000  # 32 MB: a write takes long enough to be interrupted in the middle
    path = tmp_path / f"out.{kind}"
    # The child imports the datacredit under test (installed or in-tree), as this process did.
    tested = str(Path(datacredit.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=tested + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), kind, str(n)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # Let version 1 complete, then kill while version 2 is being written: once its
        # bytes are landing, in a temporary file (atomic) or in the target (in place).
        for line in proc.stdout:
            if line.strip() == "start 2":
                break
        else:
            pytest.fail("the writer child exited early")
        full = path.stat().st_size
        deadline = time.monotonic() + 60
        while not _write_in_progress(tmp_path, path, full):
            assert proc.poll() is None and time.monotonic() < deadline, "no write seen"
            time.sleep(0.0002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert _version(path, kind, n) in (1, 2)  # old or new, never a mix
    # the interrupted temporary file never replaces the target
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != path.name]
    assert all(name.startswith(f".{path.name}.") and name.endswith(".tmp") for name in leftovers)


def test_atomic_files_get_the_usual_permissions(tmp_path):
    """A temporary file is 0600; the written file must be readable as a plain open() makes it."""
    import os
    import stat

    from datacredit._io import atomic_write_text

    p = tmp_path / "x.txt"
    atomic_write_text(p, "hi")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
