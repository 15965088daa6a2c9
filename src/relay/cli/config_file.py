"""The settings file (``relay.toml``) and ``--schedule``: where ``relay worker`` and ``relay up`` find the
schedules they define in storage when they start.

The file is ``--config FILE``, else ``RELAY_CONFIG``, else ``relay.toml`` in the current directory if
there is one. Its ``[[schedules]]`` tables are schedule documents
(:func:`relay.runtime.schedules.schedule_from_document`)::

    [[schedules]]
    name = "nightly-backup"
    schedule = "0 3 * * *"
    timezone = "Europe/Berlin"
    command = "/usr/local/bin/backup.sh --full"

    [[schedules]]
    name = "report"
    schedule = "@hourly"
    job = { type = "task", payload = { task = "reports.build", args = ["hourly"] } }

``--schedule`` takes one schedule in the form of a crontab line, with an optional name in front::

    --schedule 'backup=0 3 * * * /usr/local/bin/backup.sh --full'
    --schedule '@hourly /usr/bin/true'                 (named after the program: true)
    --schedule 'ping=every 30s curl -fsS https://example.com/health'

The command runs without a shell (split like a shell would); its timezone is UTC.
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

from relay.errors import ConfigurationError, InvalidFieldError
from relay.jobs.document import parse_job_document
from relay.runtime.schedules import ScheduleDefinition, define, schedule_from_document

DEFAULT_FILE = "relay.toml"
_SECTIONS = ("schedules",)
_NAMED = re.compile(r"^([A-Za-z0-9_.:-]+)=(.*)$", re.DOTALL)


def config_path(flag: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The settings file to read: the flag, RELAY_CONFIG, or ./relay.toml when it exists."""
    e = os.environ if env is None else env
    chosen = flag or e.get("RELAY_CONFIG")
    if chosen:
        return Path(chosen)
    default = Path(DEFAULT_FILE)
    return default if default.is_file() else None


def load_schedules(path: Path | None) -> list[ScheduleDefinition]:
    """The ``[[schedules]]`` of the settings file; errors name the file and the field."""
    if path is None:
        return []
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"cannot read the settings file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigurationError(
            f"{path}: unknown section {unknown[0]!r}; expected one of: {', '.join(_SECTIONS)}"
        )
    tables = data.get("schedules", [])
    if not isinstance(tables, list):
        raise ConfigurationError(f"{path}: schedules must be an array of tables ([[schedules]])")
    try:
        return [schedule_from_document(table, path=f"schedules[{n}]") for n, table in enumerate(tables)]
    except InvalidFieldError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc


def parse_schedule_flag(text: str) -> ScheduleDefinition:
    """One ``--schedule`` value (see the module docstring)."""
    named = _NAMED.match(text.strip())
    name, rest = (named.group(1), named.group(2)) if named else (None, text.strip())
    words = rest.split()
    if not words:
        raise ConfigurationError(f"--schedule {text!r}: expected [NAME=]SPEC COMMAND")
    size = 1 if words[0].startswith("@") else 2 if words[0].lower() == "every" else 5
    spec, command = " ".join(words[:size]), " ".join(words[size:])
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ConfigurationError(f"--schedule {text!r}: the command cannot be split: {exc}") from exc
    if not argv:
        raise ConfigurationError(f"--schedule {text!r}: no command after the spec {spec!r}")
    try:
        job = parse_job_document({"type": "shell", "payload": {"command": argv[0], "args": argv[1:]}})
        return define(name or Path(argv[0]).name, spec, job)
    except InvalidFieldError as exc:
        raise ConfigurationError(f"--schedule {text!r}: {exc}") from exc


def schedules_for(
    config: str | None, flags: Sequence[str], declared: Sequence[ScheduleDefinition] = ()
) -> tuple[ScheduleDefinition, ...]:
    """Every schedule a worker defines at start: the app's (``relay.schedule``), the settings file's and
    ``--schedule``'s; two with one name are refused."""
    found = [*declared, *load_schedules(config_path(config)), *(parse_schedule_flag(f) for f in flags)]
    seen: set[str] = set()
    for definition in found:
        if definition.name in seen:
            raise ConfigurationError(f"two schedules are named {definition.name!r}: rename one")
        seen.add(definition.name)
    return tuple(found)
