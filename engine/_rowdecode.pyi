"""Type stubs for the compiled row decoder of the column build (ext/_rowdecode.pyx)."""

from typing import Any

import numpy as np

KIND_CODES: dict[str, int]
NESTED: object

def decode_rows(
    cursor: Any,
    n: int,
    loads: Any,
    decode_error: type[BaseException],
    fields: tuple[str, ...],
    kinds: bytes,
    columns: list[np.ndarray],
    indexes: list[dict[Any, int] | None],
    values: list[list[str] | None],
) -> int:
    """Decode up to n rows from the cursor into the columns; the number of rows decoded."""

def scan_fields(buf: Any, fields: tuple[str, ...]) -> tuple[Any, ...] | None:
    """The fields' values as orjson gives them (NESTED for an object or array), or None: ask orjson."""
