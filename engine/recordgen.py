"""How a record class gets its validate / to_dict / shallow_dict / from_dict / from_json_row.

Why it is shaped this way: the engine records >= 200k actions per second, so checking a record has to
cost about a microsecond. As ``dataclasses`` does for ``__init__``, those methods are generated per
class (``@_record``) from the field annotations: straight-line type tests that call a slow, precise
function only when a value is not already in canonical form. Free-form JSON payloads are checked
together in one orjson round trip: ``loads(dumps(p)) == p`` holds exactly for canonical JSON and fails
for NaN or infinity (dumped as null), tuples, numpy scalars and foreign objects (orjson would silently
stringify a UUID or an Enum). Only then does a Python walk run; it accepts the valid non-canonical
values (tuples, numpy scalars) and names the path of a bad one, e.g.
``ActionRecord.parameters.foo[2]``. ``to_dict`` copies payloads with the same guarded round trip.

The record classes themselves, their field contract and factories are in ``engine.models``.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from enum import Enum
from typing import Any, TypeVar

import numpy as np
import orjson

from engine.enums import ActionType, AgentState, Environment
from engine.errors import ValidationError

__all__ = ["MAX_PAYLOAD_DEPTH", "Record", "coerce_float", "record", "vectors_equal", "wrong_type"]


# ----------------------------------------------------------------------------------------------
# Value checks. Fast paths live in the generated code; these functions are the slow, exact path.

# orjson encodes integers in this range only.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
# orjson encodes at most 254 nested containers. The round trip wraps the payloads in two lists, so it
# accepts payloads nested up to 252 levels: the record dict around one still leaves room for an envelope.
MAX_PAYLOAD_DEPTH = 252
_ORJSON_OPTS = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_NUMBER_TYPES = frozenset((int, float))
_FLOAT_TYPES = frozenset((float,))
_STR_TYPES = frozenset((str,))
_DICT_TYPES = frozenset((dict,))

# Field kinds, derived from the annotations (see _kind_of).
ID, OPT_ID, STR, OPT_STR = "id", "opt_id", "str", "opt_str"
FLOAT, OPT_FLOAT, INT, OPT_INT, BOOL = "float", "opt_float", "int", "opt_int", "bool"
PAYLOAD, OPT_PAYLOAD, NUMBER_MAP = "payload", "opt_payload", "number_map"
STR_LIST, PAYLOAD_LIST, VECTOR = "str_list", "payload_list", "vector"
PAYLOAD_LIST_OR_NONE = "payload_list_or_none"  # SignatureMetrics.optimization_history: None becomes []
_JSON_KINDS = frozenset((PAYLOAD, OPT_PAYLOAD, NUMBER_MAP, STR_LIST, PAYLOAD_LIST, PAYLOAD_LIST_OR_NONE))


def _describe(value: Any) -> str:
    try:
        text = reprlib.repr(value)
    except Exception:
        text = "<unprintable>"
    return f"{type(value).__name__} {text}"


def _fail(path: str, expected: str, value: Any) -> ValidationError:
    return ValidationError(f"{path}: expected {expected}, got {_describe(value)}")


def _text(value: str, path: str) -> str:
    """Return `value` as a plain str, rejecting what cannot be encoded as UTF-8 (lone surrogates)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(f"{path}: string is not valid UTF-8 (lone surrogate)") from None
    return value if type(value) is str else str.__str__(value)


def _number(value: Any, path: str, integer: bool) -> int | float:
    """Return a finite int or float (numpy scalars become Python numbers); bools are not numbers."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        number: int | float = int(value)
        if not _INT_MIN <= number <= _INT_MAX:
            raise ValidationError(f"{path}: integer {number} does not fit in 64 bits")
        return number
    if not integer and isinstance(value, (float, np.floating)):
        number = float(value)
        if number - number != 0.0:
            raise _fail(path, "a finite number", value)
        return number
    raise _fail(path, "an int" if integer else "a finite number (int or float, not bool)", value)


def _json_value(value: Any, path: str, depth: int) -> Any:
    """Check one JSON value and return it in canonical form: plain types, numpy scalars as Python
    numbers, containers copied (tuples stay tuples so that a round trip is exact)."""
    kind = type(value)
    if value is None or kind is bool:
        return value
    if isinstance(value, str):
        return _text(value, path)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return _number(value, path, False)
    if isinstance(value, (dict, list, tuple)) and depth >= MAX_PAYLOAD_DEPTH:
        raise ValidationError(f"{path}: nested deeper than {MAX_PAYLOAD_DEPTH} levels (or circular)")
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise ValidationError(f"{path}: dict key {_describe(key)} is not a str")
            out[_text(key, path)] = _json_value(item, f"{path}.{key}", depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        items = [_json_value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    hint = " (use .tolist())" if isinstance(value, np.ndarray) else ""
    raise ValidationError(f"{path}: {kind.__name__} is not JSON-serialisable{hint}")


def _reject(value: Any) -> Any:
    raise TypeError


def _json_values(values: list[Any], paths: tuple[str, ...]) -> list[Any]:
    """The exact path for payloads that failed the orjson round trip: check them, return canonical copies."""
    return [_json_value(value, path, 0) for value, path in zip(values, paths, strict=True)]


def _vector(value: Any, path: str) -> Any:
    """Check an embedding: a non-empty list of finite numbers or a 1-D numeric numpy array (kept as is)."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.size == 0 or value.dtype.kind not in "fiu":
            raise _fail(path, "a non-empty 1-D numeric array", value)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValidationError(f"{path}: vector contains NaN or infinity")
        return value
    if not isinstance(value, list) or not value:
        raise _fail(path, "a non-empty list of numbers or a 1-D numpy array", value)
    if _FLOAT_TYPES.issuperset(map(type, value)):
        total = sum(value, 0.0)  # NaN or inf anywhere makes the sum non-finite (overflow: checked below)
        if total - total == 0.0:
            return value
    for i, item in enumerate(value):
        number = _number(item, f"{path}[{i}]", False)
        if float(number) - float(number) != 0.0:
            raise _fail(f"{path}[{i}]", "a finite number", item)
    return value


def _vector_list(value: Any) -> list[float]:
    if isinstance(value, np.ndarray):
        return (value if value.dtype.kind == "f" else value.astype(np.float64)).tolist()  # type: ignore[no-any-return]
    if _FLOAT_TYPES.issuperset(map(type, value)):
        return list(value)
    return list(map(float, value))


def vectors_equal(a: Any, b: Any) -> bool:
    if type(a) is list and type(b) is list:
        return a == b
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return x.shape == y.shape and bool(np.array_equal(x, y))


def _coerce(kind: str, path: str, value: Any) -> Any:
    """The slow path of one field: return the canonical form of a valid value or raise."""
    if value is None and kind in (OPT_ID, OPT_STR, OPT_FLOAT, OPT_INT, OPT_PAYLOAD):
        return None
    if kind in (ID, OPT_ID, STR, OPT_STR):
        if not isinstance(value, str):
            raise _fail(path, "a str", value)
        if kind in (ID, OPT_ID) and not value:
            raise ValidationError(f"{path}: must be a non-empty string")
        return _text(value, path)
    if kind in (FLOAT, OPT_FLOAT, INT, OPT_INT):
        return _number(value, path, kind in (INT, OPT_INT))
    if kind == BOOL:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise _fail(path, "a bool", value)
    if kind == VECTOR:
        return _vector(value, path)
    if kind == PAYLOAD_LIST_OR_NONE and value is None:
        return []
    if kind in (PAYLOAD, OPT_PAYLOAD, NUMBER_MAP):
        if not isinstance(value, dict):
            raise _fail(path, "a dict", value)
        if kind == NUMBER_MAP:
            for key, item in value.items():
                _number(item, f"{path}.{key}", False)
        return value
    if not isinstance(value, list):
        raise _fail(path, "a list", value)
    if kind == STR_LIST:
        return [_coerce(STR, f"{path}[{i}]", item) for i, item in enumerate(value)]
    for i, item in enumerate(value):  # PAYLOAD_LIST, PAYLOAD_LIST_OR_NONE
        if not isinstance(item, dict):
            raise _fail(f"{path}[{i}]", "a dict", item)
    return value


def _coerce_enum(enum: type[Enum], path: str, value: Any) -> Enum:
    if type(value) is str:  # a wire value: one dict lookup instead of Enum.__call__
        member = _MEMBERS[enum].get(value)
        if member is not None:
            return member
    if isinstance(value, str):
        try:
            return enum(value)
        except ValueError:
            pass
    allowed = ", ".join(member.value for member in enum)
    raise ValidationError(f"{path}: expected an {enum.__name__} value ({allowed}), got {_describe(value)}")


# ----------------------------------------------------------------------------------------------
# Code generation: one validate / to_dict / from_dict per record class.

_ID_FIELDS = frozenset(
    "action_id log_id id event_id context_id patch_id session_id signature_name verifier_name".split()
)
_ENUMS: dict[str, type[Enum]] = {cls.__name__: cls for cls in (AgentState, ActionType, Environment)}
_MEMBERS: dict[type[Enum], dict[str, Enum]] = {e: {m.value: m for m in e} for e in _ENUMS.values()}
# fmt: off
_KINDS_BY_ANNOTATION = {
    "str": STR, "str | None": OPT_STR, "float": FLOAT, "float | None": OPT_FLOAT, "int": INT,
    "int | None": OPT_INT, "bool": BOOL, "dict[str, Any]": PAYLOAD, "dict[str, Any] | None": OPT_PAYLOAD,
    "dict[str, float]": NUMBER_MAP, "list[str]": STR_LIST, "list[dict[str, Any]]": PAYLOAD_LIST,
    "list[float] | np.ndarray": VECTOR,
}
# fmt: on
_INT_RANGE = f"{_INT_MIN} <= v <= {_INT_MAX}"
_FAST = {  # when the condition holds the value is valid and canonical; otherwise _coerce decides
    ID: "type(v) is str and v and v.isascii()",
    STR: "type(v) is str and v.isascii()",
    FLOAT: f"(type(v) is float and v - v == 0.0) or (type(v) is int and {_INT_RANGE})",
    INT: f"type(v) is int and {_INT_RANGE}",
    BOOL: "type(v) is bool",
    PAYLOAD: "type(v) is dict",
    NUMBER_MAP: "type(v) is dict and _NUMBER_TYPES.issuperset(map(type, v.values()))",
    STR_LIST: "type(v) is list and _STR_TYPES.issuperset(map(type, v))",
    PAYLOAD_LIST: "type(v) is list and _DICT_TYPES.issuperset(map(type, v))",
    PAYLOAD_LIST_OR_NONE: "type(v) is list and _DICT_TYPES.issuperset(map(type, v))",
    VECTOR: "False",
}
for _kind in (ID, STR, FLOAT, INT, PAYLOAD):
    _FAST["opt_" + _kind] = f"v is None or ({_FAST[_kind]})"

_GENERATED_NAMES = (
    "_coerce _coerce_enum _json_values _reject _vector_list _describe Mapping ValidationError "
    "_NUMBER_TYPES _STR_TYPES _DICT_TYPES _ORJSON_OPTS AgentState ActionType Environment"
)
_GENERATED_GLOBALS: dict[str, Any] = {name: globals()[name] for name in _GENERATED_NAMES.split()} | {
    "_new": object.__new__,
    "_loads": orjson.loads,
    "_dumps": orjson.dumps,
}


def _kind_of(name: str, annotation: str, has_factory: bool) -> str:
    if annotation in _ENUMS:
        return annotation
    kind = _KINDS_BY_ANNOTATION[annotation]
    if name in _ID_FIELDS and kind in (STR, OPT_STR):
        return ID if kind == STR else OPT_ID
    if kind == PAYLOAD_LIST and has_factory:
        return PAYLOAD_LIST_OR_NONE
    return kind


def _generate(cls: type) -> dict[str, Callable[..., Any]]:
    """Source of validate / to_dict / shallow_dict / from_dict for one record class, compiled."""
    c = cls.__name__
    checks: list[str] = []  # validate: one fast test per field, _coerce when it fails
    enums: list[str] = []  # to_dict / shallow_dict: enum members read once into locals
    copied: list[str] = []  # to_dict items ("j" is the list of payload copies)
    shallow: list[str] = []  # shallow_dict items
    args: list[str] = []  # from_dict: positional arguments
    json_names: list[str] = []
    defaults: list[Any] = []  # field defaults and default factories, in the order `args` uses them
    for f in fields(cls):  # type: ignore[arg-type]
        n, path = f.name, f"{c}.{f.name}"
        kind = _kind_of(n, str(f.type), f.default_factory is not MISSING)
        checks.append(f"    v = self.{n}")
        if kind in _ENUMS:
            checks.append(f"    if type(v) is not {kind}: self.{n} = _coerce_enum({kind}, {path!r}, v)")
            enums.append(f"    e_{n} = self.{n}")
            copied.append(f"{n!r}: e_{n}._value_ if type(e_{n}) is {kind} else e_{n}")
            shallow.append(copied[-1])
        else:
            checks.append(f"    if not ({_FAST[kind]}): self.{n} = _coerce({kind!r}, {path!r}, v)")
            if kind in _JSON_KINDS:
                copied.append(f"{n!r}: j[{len(json_names)}]")
                shallow.append(f"{n!r}: self.{n}")
                json_names.append(n)
            else:
                copied.append(f"{n!r}: {'_vector_list(self.vector)' if kind == VECTOR else 'self.' + n}")
                shallow.append(copied[-1])
        if f.default is not MISSING:  # defaults are passed in by reference, never as source text
            defaults.append(f.default)
            args.append(f"d.get({n!r}, _defaults[{len(defaults) - 1}])")
        elif f.default_factory is not MISSING:
            defaults.append(f.default_factory)
            args.append(f"d[{n!r}] if {n!r} in d else _defaults[{len(defaults) - 1}]()")
        else:
            args.append(f"d[{n!r}]")
    roundtrip: list[
        str
    ] = []  # checks and copies every payload at once; wrapped once more (see MAX_PAYLOAD_DEPTH)
    if json_names:
        paths = tuple(f"{c}.{n}" for n in json_names)
        roundtrip = [
            "    w = [[" + ", ".join(f"self.{n}" for n in json_names) + "]]",
            "    try:",
            "        j = _loads(_dumps(w, default=_reject, option=_ORJSON_OPTS))",
            "        j = j[0] if j == w else None",
            "    except Exception:  # an encode failure, or a foreign __eq__: the exact path decides",
            "        j = None",
            f"    if j is None: j = _json_values(w[0], {paths!r})",
        ]
    source = [
        "def validate(self):", *checks, *roundtrip, "    return None",
        "def to_dict(self):", *roundtrip, *enums, "    return {" + ", ".join(copied) + "}",
        "def shallow_dict(self):", *enums, "    return {" + ", ".join(shallow) + "}",
        "def from_dict(cls, d):",
        "    if type(d) is not dict and not isinstance(d, Mapping):",
        f"        raise ValidationError('{c}.from_dict: expected a mapping, got ' + _describe(d))",
        "    try:",
        f"        return cls({', '.join(args)})",
        "    except KeyError as exc:",
        f"        raise ValidationError('{c}.from_dict: missing field ' + repr(exc.args[0])) from None",
        # from_json_row: a dict fresh from orjson.loads holds only canonical JSON (no NaN, no foreign
        # objects), so the payload round trip of validate() is skipped; the per-field checks still run
        "def from_json_row(cls, d):",
        "    self = _new(cls)",
        "    try:",
        *[f"        self.{f.name} = {a}" for f, a in zip(fields(cls), args, strict=True)],  # type: ignore[arg-type]
        "    except KeyError as exc:",
        f"        raise ValidationError('{c}.from_json_row: missing field ' + repr(exc.args[0])) from None",
        *checks,
        "    return self",
    ]  # fmt: skip
    namespace: dict[str, Callable[..., Any]] = {}
    exec("\n".join(source), dict(_GENERATED_GLOBALS, _defaults=tuple(defaults)), namespace)
    return namespace


class Record:
    """Base of the record classes: the methods below are replaced by generated, per-class code."""

    __slots__ = ()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field, raising ValidationError naming the bad field (and payload path).

        Normalises in place what has a single canonical form: enum values become members, numpy
        scalars and str subclasses become plain Python values, a None optimization_history becomes [].
        """
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The record as a wire row: a deep copy, enums as their values, vectors as lists of floats."""
        raise NotImplementedError

    def shallow_dict(self) -> dict[str, Any]:
        """The to_dict() row without copying the payloads, to encode at once and then drop.

        ``orjson.dumps(r.shallow_dict())`` gives the bytes of ``orjson.dumps(r.to_dict())`` at a fraction
        of the cost (and twice as fast as orjson's own path for slotted dataclasses). Do not mutate it.
        """
        raise NotImplementedError

    @classmethod
    def from_dict(cls: type[_R], data: Mapping[str, Any]) -> _R:
        """Build a record from a wire row without mutating it.

        Enum fields accept values or members; unknown keys (written by a newer version) are ignored;
        a missing required field, a wrong type or an unknown enum value raises ValidationError.
        Like the constructor, the record refers to the payload objects of `data` without copying them.
        """
        raise NotImplementedError

    @classmethod
    def from_json_row(cls: type[_R], data: dict[str, Any]) -> _R:
        """Like `from_dict`, for a dict just decoded by orjson (the store's rows): faster, same checks on
        every field, without the payload JSON round trip (decoded JSON is canonical by construction).
        The record takes ownership of `data`'s payload objects.
        """
        raise NotImplementedError


_R = TypeVar("_R", bound=Record)


def record(cls: type[_R]) -> type[_R]:
    """Class decorator: install the generated methods on a slotted record dataclass."""
    for name, function in _generate(cls).items():
        function.__qualname__ = f"{cls.__name__}.{name}"
        function.__doc__ = getattr(Record, name).__doc__
        setattr(cls, name, classmethod(function) if name.startswith("from_") else function)
    cls.__post_init__ = cls.validate  # type: ignore[method-assign]  # one call less per construction
    return cls


def coerce_float(path: str, value: Any) -> float:
    """`value` as a float field would store it, or ValidationError naming `path`."""
    return _coerce(FLOAT, path, value)  # type: ignore[no-any-return]


def wrong_type(path: str, expected: str, value: Any) -> ValidationError:
    """The ValidationError for `value` at `path` not being `expected` (to raise)."""
    return _fail(path, expected, value)
