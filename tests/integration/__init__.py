"""Integration tests."""

from __future__ import annotations
