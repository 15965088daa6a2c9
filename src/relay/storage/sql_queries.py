"""Load named SQL queries from a ``.sql`` file: the SQL of a backend lives in files, not in Python.

A file holds blocks that each start with a ``-- name: <query_name>`` line; everything up to the next such
line is that query (other comments included, surrounding blank space stripped)::

    -- name: job_get
    SELECT * FROM jobs WHERE id = :id

Each backend loads its file once, at import, with :func:`load_queries`. The texts come from files shipped
in the package, never from user input, hence ``LiteralString``.
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import LiteralString, cast

_NAME_LINE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, LiteralString]:
    """The ``-- name:`` blocks of ``text``; a name used twice is an error (one would silently win)."""
    parts = _NAME_LINE.split(text)
    queries: dict[str, LiteralString] = {}
    # split() gives [preamble, name1, body1, name2, body2, ...]: the preamble is the file's header.
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = cast(LiteralString, body.strip())
    return queries


def load_queries(package: str, resource: str) -> dict[str, LiteralString]:
    """Parse ``resource`` shipped in ``package``: ``load_queries("relay.storage.sqlite", "queries.sql")``."""
    return parse_queries(files(package).joinpath(resource).read_text(encoding="utf-8"))
