"""Scopes: which actions a token may take on which queues.

A token's ``scope`` claim is a space-separated list of grants (the OAuth 2 habit), each
``ACTION:QUEUES`` or a bare ``ACTION`` (meaning every queue)::

    "enqueue:emails enqueue:billing-* read:* work:emails admin:emails"

- ACTION is ``enqueue`` (POST jobs, ``/enqueue``), ``read`` (get, list, logs, events, queues,
  workers, metrics), ``work`` (the runner protocol: next, heartbeat, complete) or ``admin`` (cancel,
  retry, the DLQ, pause and resume). ``admin`` on a queue also grants ``read`` on it: an operator
  must see what they steer. No other grant implies another.
- QUEUES is a queue name or a pattern with shell-style wildcards (``*``, ``?``): ``*`` is every queue.
- A grant with an unknown action grants nothing (verification ignores it; minting refuses it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase

from relay.errors import ConfigurationError


class Action(StrEnum):
    ENQUEUE = "enqueue"
    READ = "read"
    WORK = "work"
    ADMIN = "admin"


def _split(scope: str | Sequence[str]) -> list[str]:
    items = scope.split() if isinstance(scope, str) else [part for s in scope for part in str(s).split()]
    return [item for item in items if item]


def parse_grant(item: str) -> tuple[Action, str] | None:
    """``(action, pattern)`` for one grant, or None when its action is unknown."""
    name, _, pattern = item.partition(":")
    try:
        action = Action(name.lower())
    except ValueError:
        return None
    return action, pattern or "*"


def validate_scope(scope: str | Sequence[str]) -> str:
    """The scope claim for ``scope``, normalised; ConfigurationError names a grant that is wrong."""
    grants: list[str] = []
    for item in _split(scope):
        parsed = parse_grant(item)
        if parsed is None:
            actions = ", ".join(a.value for a in Action)
            raise ConfigurationError(f"scope {item!r}: unknown action (expected one of {actions})")
        grants.append(f"{parsed[0].value}:{parsed[1]}")
    if not grants:
        raise ConfigurationError("a token needs at least one scope, such as 'read:*'")
    return " ".join(grants)


@dataclass(frozen=True)
class Grants:
    """What one request may do. ``subject`` is the token's ``sub``, for logs and claims."""

    patterns: dict[Action, tuple[str, ...]] = field(default_factory=dict)
    subject: str | None = None
    unrestricted: bool = False  # auth is off: everything is allowed

    @classmethod
    def everything(cls) -> Grants:
        return cls(unrestricted=True)

    @classmethod
    def from_claim(cls, scope: object, subject: str | None = None) -> Grants:
        items = _split(scope) if isinstance(scope, str | list | tuple) else []
        patterns: dict[Action, list[str]] = {}
        for item in items:
            parsed = parse_grant(item)
            if parsed is not None:
                patterns.setdefault(parsed[0], []).append(parsed[1])
        return cls({a: tuple(p) for a, p in patterns.items()}, subject)

    def _patterns(self, action: Action) -> tuple[str, ...]:
        own = self.patterns.get(action, ())
        return own + self.patterns.get(Action.ADMIN, ()) if action is Action.READ else own

    def allows(self, action: Action, queue: str) -> bool:
        return self.unrestricted or any(fnmatchcase(queue, p) for p in self._patterns(action))

    def allows_any(self, action: Action) -> bool:
        """Whether this action is granted on at least one queue."""
        return self.unrestricted or bool(self._patterns(action))

    def allows_all(self, action: Action) -> bool:
        """Whether this action is granted on every queue (a ``*`` grant)."""
        return self.unrestricted or "*" in self._patterns(action)

    def visible(self, action: Action, names: Iterable[str]) -> list[str]:
        """The queues among ``names``, plus every literal queue of a grant, that ``action`` may touch."""
        literal = [p for p in self._patterns(action) if not any(c in p for c in "*?[")]
        return sorted({n for n in names if self.allows(action, n)} | set(literal))
