"""The storage conformance suite: one behavioural suite that every backend passes.

A package (rather than loose modules) so that its ``test_*.py`` names never clash with those of
``tests/unit`` or ``tests/integration`` under pytest's default import mode.
"""

from __future__ import annotations
