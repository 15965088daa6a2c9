"""The runtime: the worker, the executor and what they run jobs with (shell commands, threads)."""

from __future__ import annotations
