"""Config files for the command line: YAML or TOML, validated with errors that name the key.

A config is a flat mapping of option -> value.  Values that name Python objects use
``"package.module:attribute"``; :func:`load_object` imports them and, for factories,
calls them with no arguments.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


class ConfigError(ValueError):
    """A config file problem; the message names the file, the key and what is wrong."""


# A value check: ``None`` when the value is allowed, else what is allowed ("an integer >= 1").
Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Option:
    """One config key: its type, default (``REQUIRED`` if none), help text and value check.

    ``type`` is checked first (``bool`` never passes as ``int``/``float``: YAML's ``true``
    is not a number), then ``check`` (see :func:`integer`, :func:`number`, :func:`one_of`,
    :func:`object_spec`), which says what is allowed when the value is not.
    """

    type: Any
    default: Any
    help: str
    check: Check | None = None


REQUIRED = object()


def read_config(path: str | Path) -> dict[str, Any]:
    """Parse a ``.yaml``/``.yml`` or ``.toml`` file into a dict."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python < 3.11
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        else:
            raise ConfigError(f"{path}: unknown config format '{path.suffix}' (use .yaml or .toml)")
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{path}: could not be parsed: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of option: value")
    return data


def _type_names(t: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    types = t if isinstance(t, tuple) else (t,)
    if float in types:  # (int, float): any number
        types = tuple(x for x in types if x is not int)
    return " or ".join(names.get(x, f"a {x.__name__}") for x in types)


def _has_type(value: Any, t: Any) -> bool:
    types = t if isinstance(t, tuple) else (t,)
    if isinstance(value, bool):  # bool is an int subclass: only a bool option takes it
        return bool in types
    return isinstance(value, types)


def value_error(source: str, key: str, allowed: str, value: Any) -> ConfigError:
    """The one format of a bad value: ``"<key>: must be <allowed>, got <value> (<source>)"``."""
    return ConfigError(f"{key}: must be {allowed}, got {type(value).__name__} {value!r} ({source})")


def validate(
    data: dict[str, Any],
    schema: dict[str, Option],
    source: str,
    rules: tuple[Callable[[dict[str, Any]], tuple[str, str] | None], ...] = (),
) -> dict[str, Any]:
    """Check ``data`` against ``schema``: unknown keys, missing keys, types, allowed values.

    ``rules`` check several keys together (``recall >= k``); each returns ``None`` or
    ``(key, what is allowed)``.  Returns a new dict with defaults filled in.

    Raises:
        ConfigError: naming the key and what is allowed.
    """
    unknown = sorted(set(data) - set(schema))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(schema)}"
        )
    out = {}
    for key, opt in schema.items():
        if key not in data:
            if opt.default is REQUIRED:
                raise ConfigError(f"{source}: key '{key}' is required ({opt.help})")
            out[key] = opt.default
            continue
        value = data[key]
        if value is None:  # YAML null: only where "not set" is the default
            if opt.default is not None:
                raise value_error(source, key, _type_names(opt.type), value)
            out[key] = None
            continue
        if opt.type is not None and not _has_type(value, opt.type):
            err = value_error(source, key, _type_names(opt.type), value)
            if float in (opt.type if isinstance(opt.type, tuple) else (opt.type,)):
                try:
                    float(value)
                except (TypeError, ValueError):
                    pass
                else:  # e.g. 1e-3: YAML 1.1 (PyYAML) needs a dot to read a float
                    err = ConfigError(f"{err} (write it as a number, e.g. 1.0e-3, not quoted)")
            raise err
        if opt.check is not None:
            allowed = opt.check(value)
            if allowed is not None:
                raise value_error(source, key, allowed, value)
        out[key] = value
    for rule in rules:
        bad = rule(out)
        if bad is not None:
            raise value_error(source, bad[0], bad[1], out[bad[0]])
    return out


# ----------------------------------------------------------------------------- value checks
def integer(lo: int | None = None, hi: int | None = None) -> Check:
    """An integer in ``[lo, hi]`` (either bound optional)."""

    def check(v: Any) -> str | None:
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            if hi is None:
                return f"an integer >= {lo}"
            if lo is None:
                return f"an integer <= {hi}"
            return f"an integer in [{lo}, {hi}]"
        return None

    return check


def number(lo: float | None = None, *, strict: bool = False) -> Check:
    """A finite number ``>= lo`` (``> lo`` with ``strict``)."""

    def check(v: Any) -> str | None:
        bound = "" if lo is None else f" {'>' if strict else '>='} {lo:g}"
        if not math.isfinite(v) or (lo is not None and (v <= lo if strict else v < lo)):
            return f"a finite number{bound}"
        return None

    return check


def one_of(*choices: str) -> Check:
    """One of the given strings."""

    def check(v: Any) -> str | None:
        return None if v in choices else "one of " + ", ".join(map(repr, choices))

    return check


def object_spec(*names: str) -> Check:
    """``"package.module:attribute"`` (a Python object), or one of the given names."""

    def check(v: Any) -> str | None:
        if v in names:
            return None
        mod, sep, attr = v.partition(":")
        if sep and mod.strip() and attr.strip():
            return None
        named = "".join(f"{n!r} or " for n in names)
        return f"{named}'package.module:attribute'"

    return check


def non_empty(v: Any) -> str | None:
    """A non-empty string."""
    return None if v.strip() else "a non-empty string"


def torch_device(v: Any) -> str | None:
    """A torch device string (``"cpu"``, ``"cuda:0"``...); checked by torch when installed."""
    try:
        import torch
    except ImportError:  # the method that needs the device will say so
        return None if v.strip() else "a torch device such as 'cpu' or 'cuda:0'"
    try:
        torch.device(v)
    except (RuntimeError, ValueError, TypeError):
        return "a torch device such as 'cpu' or 'cuda:0'"
    return None


def load_object(spec: str, key: str, *, call: bool = False) -> Any:
    """Import ``"package.module:attribute"``; with ``call=True`` call it with no arguments."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(f"key '{key}': expected 'package.module:attribute', got {spec!r}")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"key '{key}': cannot import module '{module_name}': {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"key '{key}': module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if call:
        if not callable(obj):
            raise ConfigError(f"key '{key}': '{spec}' is not callable")
        try:
            obj = obj()
        except Exception as exc:
            raise ConfigError(f"key '{key}': calling '{spec}()' failed: {exc}") from exc
    return obj


def config_dir_on_path(path: str | Path) -> str:
    """Put the directory of the config file ``path`` first on ``sys.path`` (once), so that
    ``"mymod:fn"`` finds ``mymod.py`` next to the config, as it would next to a script.
    Returns the directory."""
    import sys

    directory = str(Path(path).resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    return directory


def describe(schema: dict[str, Option]) -> str:
    """Help text listing every key of a schema; keys without a default are "(required)"."""
    lines = []
    width = max((len(key) for key in schema), default=0)
    for key, opt in schema.items():
        default = "required" if opt.default is REQUIRED else f"default: {opt.default!r}"
        lines.append(f"  {key:<{width}} {opt.help} ({default})")
    return "\n".join(lines)


def as_callable(value: Any, key: str) -> Callable:
    """A callable from a spec string or a callable."""
    obj = load_object(value, key) if isinstance(value, str) else value
    if not callable(obj):
        raise ConfigError(f"key '{key}': expected a callable, got {type(obj).__name__}")
    return obj
