"""Workflow definitions: YAML files (Orqestra's format, and more), checked once, into definitions that
:func:`steps_for` turns into a run's steps for given parameters.

The smallest file is Orqestra's, accepted as is: steps that run one after the other::

    name: ci
    steps:
      - command: go test ./...
      - command: go build ./...

Everything a file may say::

    name: release                       # letters, digits, _ . : - (default: the file's name)
    description: build, test, ship
    on_failure: stop                    # or continue (see relay.storage.workflow_rules)
    params:                             # what a trigger may (or must) give: --param ref=main
      ref: main                         #   a default
      target: {required: true}          #   no default: a trigger must give it
    steps:
      - name: test                      # default: step-1, step-2, ...
        command: make test REF=${{ params.ref }}
      - name: build
        task: builds.make               # a registered Python task, instead of a command
        args: ["${{ params.target }}"]
        kwargs: {fast: true}
        depends_on: [test]
        queue: builds
        timeout: 10m
        max_retries: 2
        allow_failure: false
      - name: notify
        command: /usr/local/bin/notify
        args: [--channel, ops]          # with command: the program's arguments (no shell)
        env: {LEVEL: info}
        cwd: /srv
        shell: false                    # true: /bin/sh -c (the params are then shell-quoted)
        depends_on: [build]

When no step says ``depends_on``, the steps run in order (each depends on the one before); as soon as
one does, the file is a graph, and a step without ``depends_on`` starts at once. ``${{ params.NAME }}``
is replaced in commands, args, env, cwd and task arguments, after the command is split into its argv:
a parameter is always one argument, never shell syntax (with ``shell: true`` it is quoted); each
parameter is also in the step's environment as ``PARAM_<NAME>``.

Errors name the file, the line and the field (``workflows/ci.yaml:7: steps[1].depends_on: ...``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator, Field

from relay.errors import InvalidFieldError, InvalidWorkflowError
from relay.jobs.document import parse_job_document
from relay.jobs.json_values import short_repr
from relay.jobs.models import (
    QUEUE_PATTERN,
    TASK_NAME_PATTERN,
    Name255,
    PositiveSeconds,
    _Strict,
    validate_model,
)
from relay.types import JSON, FailurePolicy, StepSpec

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_PARAM = re.compile(r"\$\{\{\s*params\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_MARKER = re.compile("\ue000([A-Za-z_][A-Za-z0-9_]*)\ue001")
_POLICIES = frozenset(policy.value for policy in FailurePolicy)


def _policy(value: object) -> FailurePolicy:
    if isinstance(value, str) and value.lower() in _POLICIES:
        return FailurePolicy(value.lower())
    raise ValueError(f"expected 'stop' or 'continue', got {short_repr(value)}")


StepName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


class StepDocument(_Strict):
    name: StepName | None = None
    command: Annotated[str, Field(min_length=1)] | None = None
    args: list[str] | None = None
    shell: bool = False
    task: Annotated[str, Field(min_length=1, max_length=255, pattern=TASK_NAME_PATTERN)] | None = None
    kwargs: dict[str, Any] | None = None
    depends_on: list[StepName] | None = None
    queue: Annotated[str, Field(min_length=1, max_length=128, pattern=QUEUE_PATTERN)] | None = None
    timeout: PositiveSeconds | None = None
    max_retries: Annotated[int, Field(ge=0, le=1000)] | None = None
    priority: Annotated[int, Field(ge=-1_000_000, le=1_000_000)] | None = None
    env: dict[str, str] | None = None
    cwd: Annotated[str, Field(min_length=1)] | None = None
    allow_failure: bool = False
    tags: list[Name255] | None = None


class ParamDocument(_Strict):
    default: str | None = None
    required: bool = False


class WorkflowDocument(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")] | None = None
    description: str | None = None
    on_failure: Annotated[FailurePolicy, BeforeValidator(_policy)] = FailurePolicy.STOP
    params: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str | ParamDocument] | None = (
        None
    )
    steps: Annotated[list[StepDocument], Field(min_length=1, max_length=1000)]


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    default: str | None  # None: required


@dataclass(frozen=True, slots=True)
class StepDefinition:
    name: str
    document: StepDocument
    depends_on: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WorkflowDefinition:
    name: str
    description: str | None
    policy: FailurePolicy
    params: tuple[Param, ...]
    steps: tuple[StepDefinition, ...]
    source: str  # where it came from: a file's path, or "python"

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


# -- loading -------------------------------------------------------------------------------------------


def load_directory(directory: str | Path) -> dict[str, WorkflowDefinition]:
    """Every ``*.yaml`` / ``*.yml`` file of ``directory`` (none if it does not exist), by name."""
    found: dict[str, WorkflowDefinition] = {}
    folder = Path(directory)
    if not folder.is_dir():
        return found
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        definition = load_file(path)
        if definition.name in found:
            other = found[definition.name].source
            raise InvalidWorkflowError(
                f"{path}", f"the workflow name {definition.name!r} is taken by {other}"
            )
        found[definition.name] = definition
    return found


def load_file(path: str | Path) -> WorkflowDefinition:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise InvalidWorkflowError(str(file), f"cannot read it: {exc.strerror or exc}") from exc
    return load_text(text, str(file), default_name=file.stem)


def load_text(text: str, source: str, *, default_name: str = "workflow") -> WorkflowDefinition:
    """A definition from YAML text; ``source`` names it in errors (a path)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise InvalidWorkflowError(where, f"not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    lines = _LineIndex(node)
    try:
        return definition_from(data, source, default_name)
    except InvalidFieldError as exc:
        raise InvalidWorkflowError(f"{source}:{lines.line_of(exc.field)}: {exc.field}", exc.message) from None


def definition_from(data: object, source: str, default_name: str = "workflow") -> WorkflowDefinition:
    """A checked definition from its document (parsed YAML or JSON); errors name the field."""
    doc = validate_model(WorkflowDocument, data, "", InvalidWorkflowError)
    name = doc.name or default_name
    if not NAME_PATTERN.match(name):
        raise InvalidWorkflowError("name", f"{name!r}: expected letters, digits, '_', '.', ':' or '-'")
    params = tuple(_param(n, p) for n, p in (doc.params or {}).items())
    steps = _steps(doc.steps)
    definition = WorkflowDefinition(name, doc.description, doc.on_failure, params, steps, source)
    _check_params(definition)
    for index, step in enumerate(steps):  # a template that cannot become a job is refused at load
        try:
            parse_job_document(_job_document(step, {p.name: p.default or "x" for p in params}))
        except InvalidFieldError as exc:
            raise InvalidWorkflowError(f"steps[{index}]", exc.message) from None
    return definition


def _param(name: str, doc: str | ParamDocument) -> Param:
    if isinstance(doc, str):
        return Param(name, doc)
    if doc.required and doc.default is not None:
        raise InvalidWorkflowError(f"params.{name}", "a required parameter has no default")
    return Param(name, None if doc.required else (doc.default or ""))


def _steps(docs: list[StepDocument]) -> tuple[StepDefinition, ...]:
    names: list[str] = []
    for index, step in enumerate(docs):
        name = step.name or f"step-{index + 1}"
        if name in names:
            raise InvalidWorkflowError(f"steps[{index}].name", f"two steps are named {name!r}")
        _check_step(index, step)
        names.append(name)
    sequential = all(step.depends_on is None for step in docs)
    steps = [
        StepDefinition(name, step, _dependencies(index, name, step, names, sequential))
        for index, (name, step) in enumerate(zip(names, docs, strict=True))
    ]
    _check_acyclic(steps)
    return tuple(steps)


def _check_step(index: int, step: StepDocument) -> None:
    if (step.command is None) == (step.task is None):
        raise InvalidWorkflowError(f"steps[{index}]", "give the step's command, or its task (not both)")
    if step.task is None and step.kwargs is not None:
        raise InvalidWorkflowError(f"steps[{index}].kwargs", "kwargs go with a task")
    if step.task is not None and (step.shell or step.env or step.cwd):
        raise InvalidWorkflowError(f"steps[{index}]", "shell, env and cwd go with a command")
    if step.shell and step.args is not None:
        raise InvalidWorkflowError(f"steps[{index}].args", "with shell: true, write it all in command")


def _dependencies(
    index: int, name: str, step: StepDocument, names: list[str], sequential: bool
) -> tuple[str, ...]:
    """A step's dependencies: the step before it in a sequential file, else what it says."""
    if sequential:
        return (names[index - 1],) if index else ()
    depends = tuple(dict.fromkeys(step.depends_on or ()))
    for dep in depends:
        if dep not in names:
            raise InvalidWorkflowError(f"steps[{index}].depends_on", f"no step is named {dep!r}")
        if dep == name:
            raise InvalidWorkflowError(f"steps[{index}].depends_on", "a step cannot depend on itself")
    return depends


def _check_acyclic(steps: list[StepDefinition]) -> None:
    """Kahn's algorithm: what is left when no step is free any more is a cycle."""
    waiting = {step.name: set(step.depends_on) for step in steps}
    done: set[str] = set()
    while True:
        free = [name for name, deps in waiting.items() if deps <= done]
        if not free:
            break
        for name in free:
            done.add(name)
            del waiting[name]
    if waiting:
        index = next(i for i, step in enumerate(steps) if step.name in waiting)
        cycle = ", ".join(sorted(waiting))
        raise InvalidWorkflowError(
            f"steps[{index}].depends_on", f"the steps {cycle} depend on each other in a cycle"
        )


def _check_params(definition: WorkflowDefinition) -> None:
    declared = {p.name for p in definition.params}
    for index, step in enumerate(definition.steps):
        for field, text in _templated(step.document):
            for used in _PARAM.findall(text):
                if used not in declared:
                    raise InvalidWorkflowError(
                        f"steps[{index}].{field}", f"unknown parameter {used!r}: declare it under params"
                    )


def _templated(step: StepDocument) -> Iterator[tuple[str, str]]:
    if step.command is not None:
        yield "command", step.command
    if step.cwd is not None:
        yield "cwd", step.cwd
    for n, arg in enumerate(step.args or []):
        yield f"args[{n}]", arg
    for key, value in (step.env or {}).items():
        yield f"env.{key}", value
    for path, value in _strings(step.kwargs or {}, "kwargs"):
        yield path, value


def _strings(value: JSON, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from _strings(item, f"{path}[{n}]")


# -- a run's steps -----------------------------------------------------------------------------------


def resolve_params(definition: WorkflowDefinition, given: Mapping[str, str]) -> dict[str, str]:
    """The parameters of a run: ``given`` checked against the declared ones, defaults filled in."""
    for name, value in given.items():
        if definition.param(name) is None:
            known = ", ".join(p.name for p in definition.params) or "none"
            raise InvalidWorkflowError(
                f"params.{name}", f"{definition.name} has no such parameter (it has: {known})"
            )
        if not isinstance(value, str):
            raise InvalidWorkflowError(f"params.{name}", f"expected a string, got {short_repr(value)}")
    values: dict[str, str] = {}
    for param in definition.params:
        if param.name in given:
            values[param.name] = given[param.name]
        elif param.default is None:
            raise InvalidWorkflowError(
                f"params.{param.name}", f"{definition.name} needs it: --param {param.name}=..."
            )
        else:
            values[param.name] = param.default
    return values


def steps_for(definition: WorkflowDefinition, params: Mapping[str, str]) -> list[StepSpec]:
    """The steps of a run with these (resolved) parameters, each job checked like any job document."""
    specs = []
    for index, step in enumerate(definition.steps):
        job = parse_job_document(_job_document(step, params), path=f"steps[{index}]")
        specs.append(StepSpec(step.name, job, step.depends_on, step.document.allow_failure))
    return specs


def _job_document(step: StepDefinition, params: Mapping[str, str]) -> dict[str, JSON]:
    d = step.document
    doc: dict[str, JSON] = {}
    for field in ("queue", "timeout", "max_retries", "priority", "tags"):
        value = getattr(d, field)
        if value is not None:
            doc[field] = value
    if d.task is not None:
        doc["type"] = "task"
        doc["payload"] = {
            "task": d.task,
            "args": _substitute(d.args or [], params, quote=False),
            "kwargs": _substitute(d.kwargs or {}, params, quote=False),
        }
        return doc
    assert d.command is not None
    payload: dict[str, JSON] = {"env": {f"PARAM_{k.upper()}": v for k, v in params.items()}}
    if d.shell:
        payload |= {"command": _substitute(d.command, params, quote=True), "shell": True}
    else:
        argv = [d.command, *d.args] if d.args is not None else _split(d.command)
        argv = _substitute(argv, params, quote=False)
        payload |= {"command": argv[0], "args": argv[1:]}
    if d.env:
        payload["env"] = {**payload["env"], **_substitute(d.env, params, quote=False)}
    if d.cwd is not None:
        payload["cwd"] = _substitute(d.cwd, params, quote=False)
    doc["type"] = "shell"
    doc["payload"] = payload
    return doc


def _split(command: str) -> list[str]:
    """The argv of a command line, its ``${{ params.X }}`` kept whole: each is put aside as a marker
    without spaces while the line is split, then put back (and replaced later, one argument each)."""
    marked = _PARAM.sub(lambda m: f"\ue000{m.group(1)}\ue001", command)
    try:
        parts = shlex.split(marked)
        argv = [_MARKER.sub(lambda m: "${{ params." + m.group(1) + " }}", part) for part in parts]
    except ValueError:
        raise InvalidWorkflowError(
            "command", "cannot be split like a shell would (unbalanced quotes?)"
        ) from None
    if not argv:
        raise InvalidWorkflowError("command", "names no program")
    return argv


def _substitute(value: Any, params: Mapping[str, str], *, quote: bool) -> Any:
    if isinstance(value, str):
        return _PARAM.sub(lambda m: shlex.quote(params[m.group(1)]) if quote else params[m.group(1)], value)
    if isinstance(value, list):
        return [_substitute(item, params, quote=quote) for item in value]
    if isinstance(value, dict):
        return {key: _substitute(item, params, quote=quote) for key, item in value.items()}
    return value


# -- line numbers -------------------------------------------------------------------------------------


class _LineIndex:
    """The line (1-based) of a dotted field path in the composed YAML, for error messages."""

    def __init__(self, root: yaml.Node | None) -> None:
        self._root = root

    def line_of(self, path: str) -> int:
        node = self._root
        if node is None:
            return 1
        line = node.start_mark.line + 1
        for part in _parts(path):
            child = _child(node, part)
            if child is None:
                break
            node = child
            line = node.start_mark.line + 1
        return line


def _parts(path: str) -> Iterator[str | int]:
    for piece in path.replace("]", "").replace("[", ".").split("."):
        if piece:
            yield int(piece) if piece.isdigit() else piece


def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for key, value in node.value:
            if key.value == part:
                found: yaml.Node = value if not isinstance(value, yaml.ScalarNode) else key
                return found
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        item: yaml.Node = node.value[part]
        return item
    return None
