"""The queries of ``queries.sql``, parsed once at import: ``Q["job_claim"]``."""

from __future__ import annotations

from relay.storage.sql_queries import load_queries

Q = load_queries("relay.storage.postgres", "queries.sql")

#: The NOTIFY channel every wake-up goes through (queries.sql sends on it, the listener LISTENs).
CHANNEL = "relay_jobs"
