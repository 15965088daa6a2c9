"""`relay --server URL workflow ...` against a real `relay server --workflows DIR` process: every
subcommand prints what it prints against storage itself (both read the same SQLite file), errors
included; and a server started on a bad definition fails at once with the file and line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from .test_cli_remote import free_port, healthy

pytestmark = pytest.mark.slow

CI = """\
name: ci
description: test, then build
params:
  ref: main
steps:
  - name: test
    command: /bin/echo test ${{ params.ref }}
  - name: build
    command: /bin/echo build
    depends_on: [test]
"""


def write_workflows(directory: Path, **files: str) -> Path:
    directory.mkdir()
    for name, text in files.items():
        (directory / f"{name}.yaml").write_text(textwrap.dedent(text))
    return directory


@pytest.fixture
def workflows(tmp_path: Path) -> Path:
    return write_workflows(tmp_path / "workflows", ci=CI)


@pytest.fixture
def server_url(relay_cli: Any, wait_until: Any, workflows: Path) -> str:
    """A server without a worker: the runs' steps stay as they were started, for both sides to read."""
    port = free_port()
    relay_cli.start("server", "--port", str(port), "--workflows", str(workflows))
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: healthy(url), timeout=20)
    return url


def test_every_workflow_command_prints_the_same_through_the_server(
    relay_cli: Any, server_url: str, workflows: Path
) -> None:
    remote = ["--server", server_url]
    local = ["workflow", "--workflows", str(workflows)]

    def both(*args: str, as_json: bool = True) -> tuple[Any, Any]:
        flags = ("--json",) if as_json else ()
        there = relay_cli(*remote, *flags, "workflow", *args)
        here = relay_cli(*flags, *local, *args)
        assert there.returncode == 0, there.stderr
        assert here.returncode == 0, here.stderr
        if as_json:
            return json.loads(there.stdout), json.loads(here.stdout)
        return there.stdout, here.stdout

    listed_there, listed_here = both("list")
    assert listed_there == listed_here
    assert [w["name"] for w in listed_there["workflows"]] == ["ci"]
    assert listed_there["workflows"][0]["source"] == str(workflows / "ci.yaml")
    assert both("list", as_json=False)[0] == both("list", as_json=False)[1]

    run = relay_cli.json(*remote, "workflow", "trigger", "ci", "--param", "ref=dev")
    assert run["workflow"] == "ci"
    assert run["params"] == {"ref": "dev"}
    assert [(s["name"], s["held"]) for s in run["steps"]] == [("test", False), ("build", True)]
    plain = relay_cli(*remote, "workflow", "trigger", "ci")
    assert plain.returncode == 0, plain.stderr
    second_id = plain.stdout.strip()

    status_there, status_here = both("status", run["id"])
    assert status_there == status_here == run
    table_there, table_here = both("status", run["id"], as_json=False)
    assert table_there == table_here
    assert "waiting" in table_there

    runs_there, runs_here = both("runs", "--workflow", "ci", "--limit", "5")
    assert runs_there == runs_here
    assert [r["id"] for r in runs_there["runs"]] == [second_id, run["id"]]

    # A step that has not failed cannot be retried: the same one-line error on both sides.
    retry_there = relay_cli(*remote, "workflow", "retry", run["id"], "test")
    retry_here = relay_cli(*local, "retry", run["id"], "test")
    assert (retry_there.returncode, retry_there.stderr) == (retry_here.returncode, retry_here.stderr)
    assert retry_there.returncode == 1
    assert retry_there.stderr.startswith("error: cannot retry job")

    cancelled = relay_cli(*remote, "workflow", "cancel", run["id"])
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"cancelled run {run['id']}"
    assert relay_cli.json(*local, "status", run["id"])["state"] == "cancelled"

    for args in (("status", "nope"), ("trigger", "nope"), ("trigger", "ci", "--param", "reff=x")):
        there = relay_cli(*remote, "workflow", *args)
        here = relay_cli(*local, *args)
        assert there.returncode == here.returncode == 1, (args, there.stderr)
        assert there.stderr == here.stderr, args
        assert len(there.stderr.strip().splitlines()) == 1


def test_a_server_on_a_bad_definition_does_not_start(relay_cli: Any, tmp_path: Path) -> None:
    bad = "name: ci\nsteps:\n  - name: a\n    command: /bin/true\n    depends_on: [nope]\n"
    directory = write_workflows(tmp_path / "bad", ci=bad)
    server = relay_cli.start("server", "--port", str(free_port()), "--workflows", str(directory))
    assert server.wait() == 3
    lines = [line for line in server.stderr().splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: cannot load the workflows of {directory}: "
        f"{directory / 'ci.yaml'}:5: steps[0].depends_on: no step is named 'nope'"
    ], server.stderr()
