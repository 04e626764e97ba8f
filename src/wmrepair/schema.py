"""One definition per setting: `setting()` states a field's default, bounds and doc; `json_schema` derives the rest.

The settings are plain dataclasses: nested settings are set attribute by
attribute (`config.memory.cleanup_threshold = 0.8`) with no validation framework
at every assignment, and importing them needs no torch. Each field carries its bounds and a
one-line doc in `metadata`; from those `json_schema` writes the workflow's JSON
schema (`wmrepair schema --write`; a test fails when the file is stale), and the
command line takes defaults and help text from the same fields (`help_for`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, Field
from typing import Any

# JSON-schema keywords `setting` accepts as keyword arguments (snake_case -> camelCase).
_KEYWORDS = {
    "minimum": "minimum", "maximum": "maximum", "exclusive_minimum": "exclusiveMinimum",
    "exclusive_maximum": "exclusiveMaximum", "choices": "enum", "min_items": "minItems",
    "max_items": "maxItems", "min_length": "minLength", "items": "items",
}


def setting(default: Any = MISSING, doc: str = "", *, factory: Any = MISSING, internal: bool = False,
            schema_of: type | None = None, **bounds: Any) -> Any:
    """A dataclass field with its doc and JSON-schema bounds (see `_KEYWORDS`) stated next to its default.

    `internal`: filled by the library, not a config key (left out of the schema).
    `schema_of`: a dataclass whose fields describe a dict-valued setting.
    """
    bad = sorted(set(bounds) - set(_KEYWORDS))
    if bad:
        raise TypeError(f"setting() got unknown bound {bad[0]!r}")
    meta = {"doc": doc, "internal": internal, "schema_of": schema_of,
            "bounds": {_KEYWORDS[k]: v for k, v in bounds.items()}}
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def doc_of(cls: type, name: str) -> str:
    """The one-line doc of `cls.name`."""
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata.get("doc", "")


def default_of(cls: type, name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not MISSING else f.default


def help_for(cls: type, name: str, fmt: str = "{}") -> str:
    """`--help` text of a flag that sets `cls.name`: its doc and its default, both from the definition."""
    default = default_of(cls, name)
    shown = "none" if default is None else ",".join(map(str, default)) if isinstance(default, (list, tuple)) \
        else fmt.format(default)
    return f"{doc_of(cls, name)} (default {shown})"


def _type_schema(tp: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        s = _type_schema(inner[0]) if len(inner) == 1 else {"anyOf": [_type_schema(a) for a in inner]}
        if type(None) in args and "type" in s:
            s["type"] = [s["type"], "null"]
        return s
    if origin in (list, tuple):
        item = args[0] if args else Any
        s: dict[str, Any] = {"type": "array", "items": _type_schema(item)}
        if origin is tuple and args and args[-1] is not Ellipsis:
            s["items"] = _type_schema(args[0])
            s["minItems"] = s["maxItems"] = len(args)
        return s
    if dataclasses.is_dataclass(tp):
        return json_schema(tp)
    simple = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}
    if tp in simple:
        return {"type": simple[tp]}
    if tp is Any:
        return {}
    if isinstance(tp, type) and issubclass(tp, str):  # a str enum
        return {"type": "string"}
    raise TypeError(f"no JSON schema for type {tp!r}")


def field_schema(f: Field, hints: dict[str, Any]) -> dict[str, Any]:
    meta = f.metadata
    s = json_schema(meta["schema_of"]) if meta.get("schema_of") else _type_schema(hints[f.name])
    bounds = dict(meta.get("bounds", {}))
    items = bounds.pop("items", None)
    if items:
        s["items"] = _merge(s.get("items", {}), items)
    s.update(bounds)
    if meta.get("doc"):
        s = {"description": meta["doc"], **s}
    return s


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` laid over it, nested mappings merged (an item's bounds keep its type)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def json_schema(cls: type, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON schema of dataclass `cls`: one property per non-internal field, no others allowed."""
    hints = typing.get_type_hints(cls)
    props = {f.name: field_schema(f, hints) for f in dataclasses.fields(cls)
             if not f.metadata.get("internal") and f.init}
    s: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
        s = {"description": cls.__doc__.strip().splitlines()[0], **s}
    required = required or getattr(cls, "__required__", ())
    if required:
        s["required"] = list(required)
    return s


def defaults(cls: type) -> dict[str, Any]:
    """The defaults of `cls` as plain data (nested dataclasses as dicts, tuples as lists), internal fields left out."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal") or not f.init:
            continue
        v = default_of(cls, f.name)
        out[f.name] = _plain(v)
    return out


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v):
        return defaults(type(v))
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v
