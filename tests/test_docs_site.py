"""The docs build's griffe extension (docs/_griffe/require_docstrings.py) flags what the
strict build must refuse — a public name without a docstring, a documented parameter that is
not in the signature — and accepts what it must accept (grouped parameters, an inherited
method docstring, private names). Run on a tiny package written here, without mkdocs; the
real site is built by `make docs` in CI."""

from __future__ import annotations

import importlib.util
import logging
import textwrap
from pathlib import Path

import pytest

griffe = pytest.importorskip("griffe")
ROOT = Path(__file__).resolve().parents[1]


def _extension():
    path = ROOT / "docs" / "_griffe" / "require_docstrings.py"
    spec = importlib.util.spec_from_file_location("require_docstrings", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _problems(tmp_path, caplog, source: str) -> list[str]:
    pkg = tmp_path / "toypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""Toy package."""\n')
    (pkg / "mod.py").write_text(textwrap.dedent(source))
    ext = _extension()
    with caplog.at_level(logging.WARNING, logger=ext.LOGGER.name):
        griffe.load(
            "toypkg",
            search_paths=[str(tmp_path)],
            extensions=griffe.load_extensions(ext.RequireDocstrings),
        )
    return [r.getMessage() for r in caplog.records if r.name == ext.LOGGER.name]


def test_flags_missing_docstrings_and_unknown_parameters(tmp_path, caplog):
    got = _problems(
        tmp_path,
        caplog,
        '''
        """Module."""

        def documented(a, b, c):
            """Fine.

            Args:
                a, b: grouped, as the project writes them.
                c: alone.
            """

        def undocumented(x):
            pass

        def wrong_param(x):
            """Docs a name that is not there.

            Args:
                x, y: y is not a parameter.
            """

        def _private(x):
            pass

        class Base:
            """Base."""

            def run(self):
                """Documented once, here."""

        class Child(Base):
            """Child."""

            def run(self):
                pass

            def extra(self):
                pass

        class Conf:
            """Arguments documented on the class (merge_init_into_class).

            Args:
                alpha: there.
                beta: not there.
            """

            def __init__(self, alpha):
                self.alpha = alpha
        ''',
    )
    assert sorted(got) == sorted(
        [
            "public name without a docstring: toypkg.mod.undocumented",
            "public name without a docstring: toypkg.mod.Child.extra",
            "toypkg.mod.wrong_param: the docstring documents a parameter 'y' that is not in "
            "the signature",
            "toypkg.mod.Conf.__init__: the docstring documents a parameter 'beta' that is not "
            "in the signature",
        ]
    )


def test_mkdocs_config_names_the_extension():
    text = (ROOT / "mkdocs.yml").read_text()
    assert "docs/_griffe/require_docstrings.py:RequireDocstrings" in text
    assert "strict: true" in text
    for page in (ROOT / "docs" / "api").glob("*.md"):
        assert f"api/{page.name}" in text, page.name
