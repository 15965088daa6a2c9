"""The ``relay`` command line: submit, list, show, steer and run jobs (``relay --help``).

Each command lives in a small module (``submit``, ``jobs``, ``dlq``, ``admin``, ``worker``); ``main``
holds the click group and turns every failure into one ``error: …`` line and an exit code.
"""

from __future__ import annotations

from relay.cli.main import cli, main, run

__all__ = ["cli", "main", "run"]
