"""Real PostgreSQL and Redis servers for the tests.

Started from pip wheels, or found from RELAY_TEST_POSTGRES_URL / RELAY_TEST_REDIS_URL.
"""

from __future__ import annotations
