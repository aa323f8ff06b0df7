"""Loading of the compiled kernels, loudly.

A missing extension is an error at import, never a silent slowdown. The
reference (pure numpy/Python) path is used only when the user asks for it
with ENGINE_PURE=1.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from .errors import ConfigError, NativeExtensionError


def pure_requested() -> bool:
    """True when the user opted into the reference implementations (ENGINE_PURE=1)."""
    return os.environ.get("ENGINE_PURE", "") not in ("", "0", "false", "False")


def load(name: str) -> ModuleType | None:
    """Import the compiled module `engine.<name>`; None when ENGINE_PURE=1.

    Raises NativeExtensionError when the module was not built.
    """
    if pure_requested():
        return None
    try:
        return importlib.import_module(f"engine.{name}")
    except ImportError as exc:
        raise NativeExtensionError(
            f"the native extension engine.{name} is not built or failed to load: {exc}"
        ) from exc


def env_threads() -> int | None:
    """The thread count ENGINE_THREADS asks the kernels for; None when unset (each kernel has its
    own default). ConfigError for anything but a positive integer."""
    raw = os.environ.get("ENGINE_THREADS", "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n <= 0:
        raise ConfigError(f"ENGINE_THREADS must be a positive integer, got {raw!r}")
    return n
