"""Workflow definitions (relay.workflows): YAML files with their errors named by file, line and field,
parameters substituted into argv (never through a shell), and the Python canvas."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from relay.errors import InvalidWorkflowError
from relay.types import FailurePolicy, JobKind, NewJob
from relay.workflows.canvas import chain, chord, group
from relay.workflows.definitions import load_directory, load_file, load_text, resolve_params, steps_for

ORQESTRA = """\
name: ci
steps:
  - command: go test ./...
  - command: go build ./...
"""


def error_of(text: str) -> InvalidWorkflowError:
    with pytest.raises(InvalidWorkflowError) as caught:
        load_text(textwrap.dedent(text), "workflows/test.yaml")
    return caught.value


def test_orqestras_format_is_a_sequence() -> None:
    definition = load_text(ORQESTRA, "workflows/ci.yaml")
    assert definition.name == "ci"
    assert definition.policy is FailurePolicy.STOP
    assert [(s.name, s.depends_on) for s in definition.steps] == [("step-1", ()), ("step-2", ("step-1",))]
    [test, build] = steps_for(definition, {})
    assert test.job.kind is JobKind.SHELL
    assert test.job.payload["argv"] == ["go", "test", "./..."]
    assert build.depends_on == ("step-1",)


def test_a_graph_with_tasks_and_options() -> None:
    definition = load_text(
        textwrap.dedent(
            """\
            name: release
            on_failure: continue
            steps:
              - name: test
                command: make test
              - name: lint
                command: make lint
                allow_failure: true
              - name: build
                task: builds.make
                args: [linux]
                kwargs: {fast: true}
                depends_on: [test, lint]
                queue: builds
                timeout: 10m
                max_retries: 2
            """
        ),
        "workflows/release.yaml",
    )
    assert definition.policy is FailurePolicy.CONTINUE
    [test, lint, build] = steps_for(definition, {})
    assert (test.depends_on, lint.depends_on, build.depends_on) == ((), (), ("test", "lint"))
    assert lint.allow_failure is True
    assert build.job.payload == {"task": "builds.make", "args": ["linux"], "kwargs": {"fast": True}}
    assert (build.job.queue, build.job.timeout, build.job.max_retries) == ("builds", 600.0, 2)


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        (
            """\
            name: x
            steps:
              - name: a
                command: echo a
                depends_on: [b]
              - name: b
                command: echo b
                depends_on: [a]
            """,
            "workflows/test.yaml:5: steps[0].depends_on",
            "cycle",
        ),
        (
            """\
            name: x
            steps:
              - name: a
                command: echo a
              - name: b
                command: echo b
                depends_on: [nope]
            """,
            "workflows/test.yaml:7: steps[1].depends_on",
            "no step is named 'nope'",
        ),
        (
            """\
            name: x
            steps:
              - name: a
                command: echo a
              - name: a
                command: echo again
            """,
            "workflows/test.yaml:5: steps[1].name",
            "two steps are named 'a'",
        ),
        (
            """\
            name: x
            steps:
              - name: a
                queue: default
            """,
            "workflows/test.yaml:3: steps[0]",
            "command, or its task",
        ),
        (
            """\
            name: x
            steps:
              - command: echo ${{ params.who }}
            """,
            "workflows/test.yaml:3: steps[0].command",
            "unknown parameter 'who'",
        ),
        (
            """\
            name: x
            steps:
              - command: echo a
                retries: 3
            """,
            "workflows/test.yaml:4: steps[0].retries",
            "unknown field",
        ),
        (
            """\
            name: x
            on_failure: sometimes
            steps:
              - command: echo a
            """,
            "workflows/test.yaml:2: on_failure",
            "'stop' or 'continue'",
        ),
        ("name: x\nsteps: []\n", "workflows/test.yaml:2: steps", "at least 1"),
    ],
)
def test_bad_files_name_the_file_the_line_and_the_field(text: str, where: str, words: str) -> None:
    error = error_of(text)
    assert error.field == where
    assert words in error.message


def test_not_yaml_names_the_line() -> None:
    error = error_of("name: x\nsteps:\n  - command: [unclosed\n")
    assert error.field.startswith("workflows/test.yaml:")
    assert "not valid YAML" in error.message


def test_parameters_are_one_argument_each_and_in_the_environment() -> None:
    definition = load_text(
        textwrap.dedent(
            """\
            name: deploy
            params:
              ref: main
              target: {required: true}
            steps:
              - command: git checkout ${{ params.ref }}
              - command: deploy --to=${{ params.target }}
                env: {WHERE: "${{ params.target }}"}
              - command: echo ${{ params.ref }} && rm -rf /
                shell: true
            """
        ),
        "workflows/deploy.yaml",
    )
    with pytest.raises(InvalidWorkflowError, match="needs it"):
        resolve_params(definition, {})
    with pytest.raises(InvalidWorkflowError, match="no such parameter"):
        resolve_params(definition, {"target": "prod", "colour": "red"})
    values = resolve_params(definition, {"target": "prod; rm -rf /", "ref": "feature x"})
    checkout, deploy, shelled = steps_for(definition, values)
    assert checkout.job.payload["argv"] == ["git", "checkout", "feature x"]  # one argument, spaces kept
    assert deploy.job.payload["argv"] == ["deploy", "--to=prod; rm -rf /"]  # never shell syntax
    assert deploy.job.payload["env"]["WHERE"] == "prod; rm -rf /"
    assert deploy.job.payload["env"]["PARAM_TARGET"] == "prod; rm -rf /"
    assert shelled.job.payload["argv"] == ["/bin/sh", "-c", "echo 'feature x' && rm -rf /"]  # quoted


def test_a_directory_of_workflows(tmp_path: Path) -> None:
    (tmp_path / "ci.yaml").write_text(ORQESTRA)
    (tmp_path / "deploy.yml").write_text("steps:\n  - command: ./deploy.sh\n")
    (tmp_path / "notes.txt").write_text("not a workflow")
    found = load_directory(tmp_path)
    assert sorted(found) == ["ci", "deploy"]  # a file without a name is named after the file
    assert load_directory(tmp_path / "absent") == {}
    (tmp_path / "ci-again.yaml").write_text(ORQESTRA)
    with pytest.raises(InvalidWorkflowError, match="taken by"):
        load_directory(tmp_path)
    assert load_file(tmp_path / "ci.yaml").source == str(tmp_path / "ci.yaml")


def job(name: str) -> NewJob:
    return NewJob(
        JobKind.TASK, {"task": f"tasks.{name}", "args": [], "kwargs": {}}, idempotency_key="dropped"
    )


def test_the_canvas() -> None:
    steps = chain(job("fetch"), group(job("resize"), job("resize")), job("publish")).steps()
    assert [(s.name, s.depends_on) for s in steps] == [
        ("1-fetch", ()),
        ("2-resize", ("1-fetch",)),
        ("3-resize", ("1-fetch",)),
        ("4-publish", ("2-resize", "3-resize")),
    ]
    assert all(s.job.idempotency_key is None for s in steps)  # a step's job never reuses a key
    chorded = chord([job("a"), job("b")], job("total")).steps()
    assert chorded[-1].depends_on == ("1-a", "2-b")
    with pytest.raises(InvalidWorkflowError):
        chain()
