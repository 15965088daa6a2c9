"""JSON values as Relay stores them, and the dotted paths that name a place inside a job document.

Relay stores payloads, metadata and chained jobs as JSON (orjson; never pickle). A value that JSON
cannot carry must be rejected at enqueue with the path to it, not found later by a storage backend
that fails to serialise it. So :func:`check_json` accepts exactly what orjson writes back unchanged:

- ``dict`` with ``str`` keys, ``list``, ``str``, ``bool`` and ``None``;
- ``int`` within 64 bits (orjson's range; JavaScript clients lose precision far sooner);
- finite ``float`` (NaN and infinities are not JSON numbers);
- strings without lone surrogates (they cannot be encoded as UTF-8);
- at most :data:`MAX_JSON_DEPTH` levels of nesting (orjson refuses to write deeper than 254).
"""

from __future__ import annotations

import json
import math
import re

from relay.errors import InvalidJobError

MAX_JSON_DEPTH = 128
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def join_path(path: str, key: str | int) -> str:
    """``path`` extended by an object key or a list index: ``payload.args[1]``, ``env["A-B"]``.

    Keys that are not identifiers are quoted, so that a key containing a dot stays one step.
    """
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def check_json(value: object, path: str = "") -> None:
    """Raise :class:`~relay.errors.InvalidJobError` at the first place in ``value`` that is not JSON.

    Iterative rather than recursive, so that a deeply nested value is reported, never a RecursionError.
    """
    # (value, path of its container, key in the container or None for the root, depth)
    stack: list[tuple[object, str, str | int | None, int]] = [(value, path, None, 0)]
    while stack:
        item, parent, key, depth = stack.pop()
        if isinstance(item, dict | list):
            where = parent if key is None else join_path(parent, key)
            if depth >= MAX_JSON_DEPTH:
                raise InvalidJobError(where, f"nested deeper than {MAX_JSON_DEPTH} levels")
            # Reversed, so that the stack pops children in document order and the first error wins.
            stack.extend(reversed(_children(item, where, depth + 1)))
        elif not _is_json_scalar(item):
            where = parent if key is None else join_path(parent, key)
            raise InvalidJobError(where, _scalar_problem(item))


def json_type(value: object) -> str:
    """The JSON name of ``value``'s type, for error messages: ``object``, ``array``, ``string``, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else type(value).__name__


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: error messages quote input, never all of it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _children(
    item: dict[object, object] | list[object], where: str, depth: int
) -> list[tuple[object, str, str | int | None, int]]:
    if isinstance(item, list):
        return [(child, where, index, depth) for index, child in enumerate(item)]
    children: list[tuple[object, str, str | int | None, int]] = []
    for key, child in item.items():
        if not isinstance(key, str) or not _is_utf8(key):
            raise InvalidJobError(where, f"object keys must be UTF-8 strings, got {key!r}")
        children.append((child, where, key, depth))
    return children


def _is_json_scalar(item: object) -> bool:
    if item is None or isinstance(item, bool):
        return True
    if isinstance(item, int):
        return _INT_MIN <= item <= _INT_MAX
    if isinstance(item, float):
        return math.isfinite(item)
    return isinstance(item, str) and _is_utf8(item)


def _is_utf8(text: str) -> bool:
    # isascii() is O(1) in CPython; only non-ASCII text pays for the encoding check.
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _scalar_problem(item: object) -> str:
    if isinstance(item, int):
        return f"integers must fit in 64 bits, got {item}"
    if isinstance(item, float):
        return f"expected a finite number (NaN and infinity are not JSON), got {item!r}"
    if isinstance(item, str):
        return "text must be valid Unicode (it contains a lone surrogate)"
    if isinstance(item, tuple):
        return "expected a JSON value; a tuple is not one (use a list)"
    kinds = "object, array, string, number, true, false or null"
    return f"expected a JSON value ({kinds}), got {type(item).__name__}"
