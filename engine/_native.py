"""Loading of the compiled kernels, loudly.

A missing extension is an error at import, never a silent slowdown. The
reference (pure numpy/Python) path is used only when the user asks for it
with ENGINE_PURE=1.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from .errors import NativeExtensionError


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
