"""Griffe extension of the docs build: every public name of datacredit has a docstring, and
every parameter a docstring documents exists.

Each problem is logged as a warning under ``mkdocs.``, which ``mkdocs build --strict``
turns into a failed build.

- **Public** means what griffe calls public (no leading underscore; in a module with
  ``__all__``, the names it lists), inside a public module. Aliases (re-exports) are
  checked in the module that defines them. A method that overrides a documented method of
  a base class inherits its docstring (as ``inspect.getdoc`` does). ``datacredit.demo``
  is the demo application, not API, and not rendered by the site.
- **Parameters**: the project writes parameters that share a description on one line
  (``tol, max_iter: stopping rule``), which griffe's Google parser does not split; the
  build turns griffe's own unknown-parameter warning off (``docstring_options``) and this
  extension checks every name of such a line against the signature instead.
"""

from __future__ import annotations

import logging
from typing import Any

import griffe

LOGGER = logging.getLogger("mkdocs.plugins.datacredit.require_docstrings")
EXCLUDED = ("datacredit.demo",)


def _has_doc(obj: Any) -> bool:
    return bool(obj.docstring and obj.docstring.value.strip())


def _inherited_doc(cls: Any, name: str) -> bool:
    try:
        bases = cls.resolved_bases
    except Exception:  # an unresolvable base (outside the package): nothing to inherit
        return False
    for base in bases:
        member = base.members.get(name)
        if member is not None and (_has_doc(member) or _inherited_doc(base, name)):
            return True
    return False


def _check_params(func: Any, problems: list[str]) -> None:
    if not _has_doc(func):
        return
    names = {p.name for p in func.parameters}
    variadic = any(p.kind and p.kind.value in ("variadic keyword",) for p in func.parameters)
    sections = func.docstring.parse("google", warn_unknown_params=False, warn_missing_types=False)
    for section in sections:
        if section.kind.value != "parameters":
            continue
        for param in section.value:
            for name in (n.strip().lstrip("*") for n in param.name.split(",")):
                if name and name not in names and not variadic:
                    problems.append(
                        f"{func.path}: the docstring documents a parameter {name!r} that is "
                        "not in the signature"
                    )


def _walk(obj: Any, problems: list[str]) -> None:
    for member in obj.members.values():
        if member.is_alias or member.name.startswith("_") and member.name != "__init__":
            continue
        if member.path.startswith(EXCLUDED) or not (member.is_public or member.name == "__init__"):
            continue
        if member.is_module or member.is_class or member.is_function:
            if member.name != "__init__" and not _has_doc(member):
                if not (obj.is_class and member.is_function and _inherited_doc(obj, member.name)):
                    problems.append(f"public name without a docstring: {member.path}")
            if member.is_function:
                _check_params(member, problems)
            if member.is_class:
                # Class docstrings document __init__'s arguments (merge_init_into_class).
                init = member.members.get("__init__")
                if init is not None and not init.is_alias and _has_doc(member):
                    names = {p.name for p in init.parameters}
                    fake = griffe.Function("__init__", parent=member, docstring=member.docstring)
                    fake.parameters = griffe.Parameters(*init.parameters)
                    if names:
                        _check_params(fake, problems)
            if member.is_module or member.is_class:
                _walk(member, problems)


class RequireDocstrings(griffe.Extension):
    """Warn (fail the strict build) for each public object without a docstring and each
    documented parameter missing from its signature."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Check the loaded package once it is complete."""
        problems: list[str] = []
        if not _has_doc(pkg):
            problems.append(f"public name without a docstring: {pkg.path}")
        _walk(pkg, problems)
        for problem in problems:
            LOGGER.warning(problem)
