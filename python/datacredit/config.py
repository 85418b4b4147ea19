"""Config files for the command line: YAML or TOML, validated with errors that name the key.

A config is a flat mapping of option -> value.  Values that name Python objects use
``"package.module:attribute"``; :func:`load_object` imports them and, for factories,
calls them with no arguments.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


class ConfigError(ValueError):
    """A config file problem; the message names the file, the key and what is wrong."""


@dataclass(frozen=True)
class Option:
    """One config key: its type, default (``REQUIRED`` if none) and help text."""

    type: Any
    default: Any
    help: str


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


def validate(data: dict[str, Any], schema: dict[str, Option], source: str) -> dict[str, Any]:
    """Check ``data`` against ``schema``: unknown keys, missing keys, wrong types.

    Returns a new dict with defaults filled in.
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
        if value is not None and opt.type is not None and not isinstance(value, opt.type):
            names = (
                " or ".join(t.__name__ for t in opt.type)
                if isinstance(opt.type, tuple)
                else opt.type.__name__
            )
            raise ConfigError(
                f"{source}: key '{key}' must be {names}, got {type(value).__name__} {value!r}"
            )
        out[key] = value
    return out


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


def describe(schema: dict[str, Option]) -> str:
    """Help text listing every key of a schema."""
    lines = []
    for key, opt in schema.items():
        default = "required" if opt.default is REQUIRED else f"default: {opt.default!r}"
        lines.append(f"  {key:<14} {opt.help} ({default})")
    return "\n".join(lines)


def as_callable(value: Any, key: str) -> Callable:
    """A callable from a spec string or a callable."""
    obj = load_object(value, key) if isinstance(value, str) else value
    if not callable(obj):
        raise ConfigError(f"key '{key}': expected a callable, got {type(obj).__name__}")
    return obj
