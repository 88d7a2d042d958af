"""Typed helpers that read settings from the environment and fail loudly on bad values.

Every knob of LegacyFlo comes from the environment so that one settings module serves
development, tests and production. A secret may also be given as ``NAME_FILE`` (the path
of a file holding it), which is how container orchestrators hand out secrets.
"""

from __future__ import annotations

import os
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ImproperEnv(ValueError):
    """An environment variable holds a value the application cannot use."""


def env_str(name: str, default: str | None = None) -> str | None:
    """Return ``name`` or the contents of the file named by ``name_FILE``, else ``default``."""
    file_var = os.environ.get(f"{name}_FILE")
    if file_var:
        try:
            return Path(file_var).read_text().strip()
        except OSError as exc:
            raise ImproperEnv(f"{name}_FILE={file_var!r} cannot be read: {exc}") from exc
    value = os.environ.get(name)
    return default if value is None else value


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperEnv(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperEnv(f"{name}={raw!r} is not an integer") from exc
    if minimum is not None and value < minimum:
        raise ImproperEnv(f"{name}={value} must be at least {minimum}")
    return value


def env_int_or_off(name: str, *, minimum: int) -> int:
    """An integer that is 0 or unset (the feature is off) or at least ``minimum``."""
    value = env_int(name, 0, minimum=0)
    if 0 < value < minimum:
        raise ImproperEnv(f"{name}={value} must be 0 (off) or at least {minimum}")
    return value


def env_list(name: str, default: list[str] | None = None, *, sep: str = ",") -> list[str]:
    raw = env_str(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(sep) if item.strip()]
