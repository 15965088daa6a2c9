"""Relay's benchmarks (not tests): throughput and latency per backend. Run with ``make bench``."""

from __future__ import annotations
