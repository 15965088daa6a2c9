"""Relay: a distributed, fault-tolerant job queue and job runner for Python."""

from __future__ import annotations

__version__ = "0.1.0"
