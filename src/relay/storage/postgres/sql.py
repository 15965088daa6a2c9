"""The queries of ``queries.sql``, parsed once at import: ``Q["job_claim"]``.

They are sent without their comment lines and indentation. Not for the bytes on the wire: psycopg caches
the conversion of a query (its ``%(name)s`` placeholders to ``$1``...) only for texts of at most
``MAX_CACHED_STATEMENT_LENGTH`` (4096) characters, and parses a longer one again at every execution. With
their comments, ``job_finish`` and ``job_insert`` were longer, and that parse cost more client CPU than
the rest of a one-job call (about 150 µs of 250).
"""

from __future__ import annotations

from typing import LiteralString

from relay.storage.sql_queries import load_queries


def compact(query: LiteralString) -> LiteralString:
    """``query`` without its full-line ``--`` comments, blank lines and indentation. The queries have no
    comment at the end of a line of SQL, nor a string literal that spans lines."""
    lines = (line.strip() for line in query.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("--"))


Q: dict[str, LiteralString] = {
    name: compact(query) for name, query in load_queries("relay.storage.postgres", "queries.sql").items()
}

#: The NOTIFY channel every wake-up goes through (queries.sql sends on it, the listener LISTENs).
CHANNEL = "relay_jobs"
