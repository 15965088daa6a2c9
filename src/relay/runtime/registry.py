"""Task functions by name: what a worker resolves ``payload.task`` to."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from relay.errors import ConfigurationError, TaskNotFoundError


@dataclass(frozen=True, slots=True)
class TaskFunction:
    name: str
    fn: Callable[..., Any]
    is_async: bool


class TaskRegistry:
    def __init__(self) -> None:
        self._tasks: dict[str, TaskFunction] = {}

    def register(self, name: str, fn: Callable[..., Any]) -> TaskFunction:
        existing = self._tasks.get(name)
        if existing is not None and existing.fn is not fn:
            raise ConfigurationError(f"two different functions are registered as task {name!r}")
        entry = TaskFunction(name, fn, inspect.iscoroutinefunction(fn))
        self._tasks[name] = entry
        return entry

    def resolve(self, name: str) -> TaskFunction:
        try:
            return self._tasks[name]
        except KeyError:
            raise TaskNotFoundError(name) from None

    def names(self) -> list[str]:
        return sorted(self._tasks)
