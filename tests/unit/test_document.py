"""Job documents (DESIGN.md section 3): the legacy format, every rule, exact error paths, round trips."""

from __future__ import annotations

import json
import re
import string
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.errors import InvalidJobError
from relay.jobs import (
    MAX_CHAIN_DEPTH,
    JobDocument,
    ShellPayload,
    TaskPayload,
    document_from_job,
    parse_job_document,
    parse_job_documents,
)
from relay.types import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_RETRIES,
    Backoff,
    BackoffKind,
    JobKind,
    NewJob,
)

LEGACY = {
    "type": "SHELL",
    "payload": {
        "command": "/usr/local/bin/process-data.sh",
        "args": ["--input", "/data/file.csv"],
        "timeout": "5m",
    },
    "on_success": {"type": "SHELL", "payload": {"command": "/usr/local/bin/notify.sh"}},
    "max_retries": 3,
    "backoff": "exponential",
}


def shell(command: str = "echo hi", **payload: Any) -> dict[str, Any]:
    return {"type": "shell", "payload": {"command": command, **payload}}


def external(**fields: Any) -> dict[str, Any]:
    return {"type": "external", **fields}


def error_for(doc: object) -> InvalidJobError:
    with pytest.raises(InvalidJobError) as caught:
        parse_job_document(doc)
    return caught.value


# -- the legacy document -------------------------------------------------------------------------


def test_legacy_document_is_accepted_as_written() -> None:
    job = parse_job_document(json.loads(json.dumps(LEGACY)))

    assert job.kind is JobKind.SHELL
    assert job.payload["argv"] == ["/usr/local/bin/process-data.sh", "--input", "/data/file.csv"]
    assert job.payload["shell"] is False
    assert job.timeout == 300.0
    assert job.max_retries == 3
    assert job.backoff == Backoff(BackoffKind.EXPONENTIAL, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX)
    assert job.on_success is not None
    assert job.on_success.kind is JobKind.SHELL
    assert job.on_success.payload["argv"] == ["/usr/local/bin/notify.sh"]
    assert job.on_failure is None


def test_legacy_document_normalised_payload() -> None:
    assert parse_job_document(LEGACY).payload == {
        "command": "/usr/local/bin/process-data.sh",
        "args": ["--input", "/data/file.csv"],
        "argv": ["/usr/local/bin/process-data.sh", "--input", "/data/file.csv"],
        "shell": False,
        "env": {},
        "cwd": None,
    }


# -- type and payloads ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "kind"),
    [
        ("shell", JobKind.SHELL),
        ("Shell", JobKind.SHELL),
        ("TASK", JobKind.TASK),
        ("eXternal", JobKind.EXTERNAL),
    ],
)
def test_type_is_case_insensitive(written: str, kind: JobKind) -> None:
    payload = {"shell": {"command": "true"}, "task": {"task": "a.b"}, "external": None}[kind.value]
    assert parse_job_document({"type": written, "payload": payload}).kind is kind


def test_command_alone_is_split_like_a_shell_and_runs_without_one() -> None:
    job = parse_job_document(shell("""grep -r 'two words' "a \\"b\\"" """))
    assert job.payload["argv"] == ["grep", "-r", "two words", 'a "b"']
    assert job.payload["args"] == []
    assert job.payload["shell"] is False


def test_command_with_args_is_the_program_and_is_not_split() -> None:
    job = parse_job_document(shell("/opt/my tool", args=["a b", ""]))
    assert job.payload["argv"] == ["/opt/my tool", "a b", ""]


def test_empty_args_still_means_do_not_split() -> None:
    assert parse_job_document(shell("ls -l", args=[])).payload["argv"] == ["ls -l"]


def test_shell_true_runs_through_bin_sh() -> None:
    job = parse_job_document(shell("echo $HOME | wc -c", shell=True))
    assert job.payload["argv"] == ["/bin/sh", "-c", "echo $HOME | wc -c"]
    assert job.payload["shell"] is True


def test_shell_payload_keeps_env_and_cwd() -> None:
    job = parse_job_document(shell("env", env={"A": "1", "B_2": ""}, cwd="/tmp"))
    assert job.payload["env"] == {"A": "1", "B_2": ""}
    assert job.payload["cwd"] == "/tmp"


def test_payload_timeout_sets_the_job_timeout_and_top_level_wins() -> None:
    assert parse_job_document(shell(timeout="90s")).timeout == 90.0
    assert parse_job_document({**shell(timeout="90s"), "timeout": 10}).timeout == 10.0
    assert parse_job_document(shell()).timeout is None


def test_task_payload_is_normalised_to_three_keys() -> None:
    job = parse_job_document({"type": "task", "payload": {"task": "billing.charge"}})
    assert job.payload == {"task": "billing.charge", "args": [], "kwargs": {}}
    job = parse_job_document(
        {"type": "task", "payload": {"task": "a.b", "args": [1, {"x": None}], "kwargs": {"k": [2]}}}
    )
    assert job.payload == {"task": "a.b", "args": [1, {"x": None}], "kwargs": {"k": [2]}}


def test_task_names_made_by_the_sdk_for_nested_functions_are_accepted() -> None:
    job = parse_job_document({"type": "task", "payload": {"task": "tests.test_x.test_y.<locals>.add"}})
    assert job.payload["task"] == "tests.test_x.test_y.<locals>.add"


@pytest.mark.parametrize("payload", [None, 0, "text", [1, "a"], {"any": {"thing": [True, 1.5]}}])
def test_external_payload_is_stored_as_given(payload: object) -> None:
    assert parse_job_document(external(payload=payload)).payload == payload


def test_external_payload_defaults_to_null() -> None:
    assert parse_job_document(external()).payload is None


# -- top-level fields ----------------------------------------------------------------------------


def test_defaults() -> None:
    job = parse_job_document(external())
    assert (job.queue, job.id, job.priority, job.run_at, job.delay) == ("default", None, 0, None, 0.0)
    assert job.max_retries == DEFAULT_MAX_RETRIES
    assert job.backoff == Backoff()
    assert (job.timeout, job.lease, job.idempotency_key) == (None, DEFAULT_LEASE_SECONDS, None)
    assert (job.on_success, job.on_failure, job.tags, job.metadata) == (None, None, (), {})


def test_every_optional_field() -> None:
    job = parse_job_document(
        external(
            id="job-1",
            queue="emails.high:1",
            priority=-5,
            delay="1m",
            max_retries=0,
            backoff="LINEAR",
            backoff_base="2s",
            backoff_max="1m",
            timeout="1h",
            lease="45s",
            idempotency_key="order-42",
            on_failure=external(payload="alert"),
            tags=["a", "b"],
            metadata={"owner": "ops", "n": [1]},
        )
    )
    assert (job.id, job.queue, job.priority, job.delay, job.max_retries) == (
        "job-1",
        "emails.high:1",
        -5,
        60.0,
        0,
    )
    assert job.backoff == Backoff(BackoffKind.LINEAR, 2.0, 60.0)
    assert (job.timeout, job.lease, job.idempotency_key) == (3600.0, 45.0, "order-42")
    assert job.on_failure == NewJob(kind=JobKind.EXTERNAL, payload="alert")
    assert (job.tags, job.metadata) == (("a", "b"), {"owner": "ops", "n": [1]})


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2026-03-01T12:00:00", datetime(2026, 3, 1, 12, tzinfo=UTC)),  # naive means UTC
        ("2026-03-01T12:00:00Z", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01T14:30:00+02:30", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01T12:00:00.250000+00:00", datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)),
    ],
)
def test_run_at_is_stored_as_aware_utc(written: str, expected: datetime) -> None:
    run_at = parse_job_document(external(run_at=written)).run_at
    assert run_at == expected
    assert run_at is not None
    assert run_at.utcoffset() == timedelta(0)


def test_backoff_defaults_follow_the_bound_that_was_given() -> None:
    # base alone above the default max raises the max with it; max alone below the default base lowers it.
    assert parse_job_document(external(backoff_base="2h")).backoff == Backoff(base=7200.0, max=7200.0)
    assert parse_job_document(external(backoff_max="500ms")).backoff == Backoff(base=0.5, max=0.5)
    assert parse_job_document(external(backoff="Fixed")).backoff.kind is BackoffKind.FIXED


def test_null_means_absent() -> None:
    nulls = dict.fromkeys(["id", "queue", "priority", "run_at", "delay", "timeout", "tags", "metadata"])
    assert parse_job_document(external(**nulls)) == parse_job_document(external())
    assert parse_job_document(shell(args=None, env=None, cwd=None)) == parse_job_document(shell())


def test_chains_nest_up_to_the_limit() -> None:
    doc: dict[str, Any] = external(payload=0)
    for level in range(1, MAX_CHAIN_DEPTH + 1):
        doc = external(payload=level, on_success=doc)
    job: NewJob | None = parse_job_document(doc)
    payloads = []
    while job is not None:
        payloads.append(job.payload)
        job = job.on_success
    assert payloads == list(range(MAX_CHAIN_DEPTH, -1, -1))


def test_parse_job_documents_keeps_order() -> None:
    jobs = parse_job_documents([external(payload=1), shell("ls"), external(payload=3)])
    assert [job.kind for job in jobs] == [JobKind.EXTERNAL, JobKind.SHELL, JobKind.EXTERNAL]
    assert parse_job_documents([]) == []


# -- invalid documents: the exact field path of each -----------------------------------------------


def deep_chain(levels: int) -> dict[str, Any]:
    doc: dict[str, Any] = external()
    for _ in range(levels):
        doc = external(on_failure=doc)
    return doc


INVALID: list[tuple[str, object, str, str]] = [
    # (id, document, field, a fragment of the message)
    ("not an object", ["type"], "", "must be a JSON object"),
    ("null document", None, "", "must be a JSON object"),
    ("type missing", {"payload": None}, "type", "required"),
    ("type unknown", {"type": "cron"}, "type", "'shell', 'task' or 'external'"),
    ("type not a string", {"type": 1}, "type", "'shell', 'task' or 'external'"),
    ("unknown top-level field", external(retries=3), "retries", "unknown field"),
    ("shell payload missing", {"type": "shell"}, "payload", "needs a payload"),
    ("shell payload not an object", {"type": "shell", "payload": "ls"}, "payload", "expected an object"),
    ("command missing", {"type": "shell", "payload": {"args": []}}, "payload.command", "required"),
    ("command empty", shell(""), "payload.command", "empty"),
    ("command blank", shell("   ", args=["x"]), "payload.command", "blank"),
    (
        "command not a string",
        {"type": "shell", "payload": {"command": ["ls"]}},
        "payload.command",
        "a string",
    ),
    ("unbalanced quote", shell("echo 'hi"), "payload.command", "cannot be split"),
    ("trailing backslash", shell("echo \\"), "payload.command", "cannot be split"),
    ("splits to an empty program", shell("'' x"), "payload.command", "no program"),
    ("NUL in command", shell("echo\0"), "payload.command", "NUL"),
    ("args not a list", shell(args="-l"), "payload.args", "expected an array"),
    ("args item not a string", shell(args=["a", 2]), "payload.args[1]", "expected a string"),
    ("shell with args", shell(shell=True, args=["x"]), "payload.args", "shell: true"),
    ("shell with empty args", shell(shell=True, args=[]), "payload.args", "shell: true"),
    ("shell not a bool", shell(shell="yes"), "payload.shell", "true or false"),
    ("env not an object", shell(env=["A=1"]), "payload.env", "expected an object"),
    ("env value not a string", shell(env={"A": 1}), "payload.env.A", "expected a string"),
    ("env name with =", shell(env={"A=B": "1"}), 'payload.env["A=B"]', "'='"),
    ("cwd empty", shell(cwd=""), "payload.cwd", "empty"),
    ("payload timeout zero", shell(timeout=0), "payload.timeout", "greater than 0"),
    ("payload timeout bad", shell(timeout="soon"), "payload.timeout", "'30s'"),
    ("unknown shell field", shell(stdin="x"), "payload.stdin", "unknown field"),
    ("task payload missing", {"type": "task"}, "payload", "needs a payload"),
    ("task name missing", {"type": "task", "payload": {}}, "payload.task", "required"),
    ("task name empty", {"type": "task", "payload": {"task": ""}}, "payload.task", "empty"),
    ("task name not dotted", {"type": "task", "payload": {"task": "a..b"}}, "payload.task", "dotted name"),
    ("task name spaces", {"type": "task", "payload": {"task": "a b"}}, "payload.task", "dotted name"),
    ("task args not a list", {"type": "task", "payload": {"task": "a", "args": {}}}, "payload.args", "array"),
    (
        "task kwargs not object",
        {"type": "task", "payload": {"task": "a", "kwargs": []}},
        "payload.kwargs",
        "object",
    ),
    (
        "unknown task field",
        {"type": "task", "payload": {"task": "a", "queue": "x"}},
        "payload.queue",
        "unknown",
    ),
    ("id empty", external(id=""), "id", "empty"),
    ("id too long", external(id="x" * 256), "id", "at most 255"),
    ("id not a string", external(id=7), "id", "expected a string"),
    ("queue empty", external(queue=""), "queue", "empty"),
    ("queue bad characters", external(queue="a/b"), "queue", "letters, digits"),
    ("queue too long", external(queue="q" * 129), "queue", "at most 128"),
    ("priority bool", external(priority=True), "priority", "integer"),
    ("priority float", external(priority=1.0), "priority", "integer"),
    ("priority string", external(priority="1"), "priority", "integer"),
    ("priority too high", external(priority=1_000_001), "priority", "at most 1000000"),
    ("priority too low", external(priority=-1_000_001), "priority", "at least -1000000"),
    ("run_at not ISO", external(run_at="tomorrow"), "run_at", "ISO-8601"),
    ("run_at a number", external(run_at=1700000000), "run_at", "ISO-8601"),
    ("run_at and delay", external(run_at="2026-01-01T00:00:00Z", delay=5), "delay", "not both"),
    ("delay negative", external(delay=-1), "delay", "'30s'"),
    ("delay bool", external(delay=True), "delay", "'30s'"),
    ("max_retries negative", external(max_retries=-1), "max_retries", "at least 0"),
    ("max_retries too high", external(max_retries=1001), "max_retries", "at most 1000"),
    ("max_retries bool", external(max_retries=False), "max_retries", "integer"),
    ("backoff unknown", external(backoff="random"), "backoff", "'exponential', 'linear' or 'fixed'"),
    ("backoff_base zero", external(backoff_base=0), "backoff_base", "greater than 0"),
    ("backoff_max below base", external(backoff_base="1m", backoff_max="30s"), "backoff_max", "backoff_base"),
    ("timeout zero", external(timeout="0s"), "timeout", "greater than 0"),
    ("lease below one second", external(lease="500ms"), "lease", "at least 1s"),
    ("idempotency_key empty", external(idempotency_key=""), "idempotency_key", "empty"),
    ("idempotency_key too long", external(idempotency_key="k" * 256), "idempotency_key", "at most 255"),
    ("tags not a list", external(tags="a"), "tags", "array"),
    ("tag empty", external(tags=["a", ""]), "tags[1]", "empty"),
    ("tag not a string", external(tags=[1]), "tags[0]", "expected a string"),
    ("too many tags", external(tags=[str(i) for i in range(51)]), "tags", "at most 50 items"),
    ("metadata not an object", external(metadata=[1]), "metadata", "object"),
    ("on_success not an object", external(on_success="x"), "on_success", "object"),
    (
        "nested payload error",
        external(on_success=shell(args=["a", None])),
        "on_success.payload.args[1]",
        "string",
    ),
    ("nested unknown field", external(on_failure=external(bogus=1)), "on_failure.bogus", "unknown field"),
    (
        "nested delay",
        external(on_success=external(run_at="2026-01-01", delay=1)),
        "on_success.delay",
        "not both",
    ),
    ("chain too deep", deep_chain(MAX_CHAIN_DEPTH + 1), ".".join(["on_failure"] * 11), "at most 10"),
]


@pytest.mark.parametrize(
    ("doc", "field", "fragment"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_documents_name_the_field(doc: object, field: str, fragment: str) -> None:
    error = error_for(doc)
    assert error.field == field
    assert fragment in error.message
    assert error.code == "invalid_job"


def test_deep_chain_limit_is_exact() -> None:
    assert parse_job_document(deep_chain(MAX_CHAIN_DEPTH)).on_failure is not None
    assert error_for(deep_chain(MAX_CHAIN_DEPTH + 1)).field.count("on_failure") == MAX_CHAIN_DEPTH + 1


def test_unknown_field_message_lists_the_known_ones() -> None:
    message = error_for(shell(comand="x")).message
    assert "command, args, shell, env, cwd, timeout" in message


def test_errors_in_a_list_name_the_index() -> None:
    with pytest.raises(InvalidJobError) as caught:
        parse_job_documents([external(), external(), external(), shell(args=["a", 3])])
    assert caught.value.field == "[3].payload.args[1]"
    assert str(caught.value).startswith("[3].payload.args[1]: ")


@pytest.mark.parametrize("docs", [{"type": "external"}, "[]", None])
def test_parse_job_documents_wants_a_list(docs: object) -> None:
    with pytest.raises(InvalidJobError) as caught:
        parse_job_documents(docs)
    assert caught.value.field == ""
    assert "array" in caught.value.message


def test_a_non_object_in_a_list_is_named_by_index() -> None:
    with pytest.raises(InvalidJobError) as caught:
        parse_job_documents([external(), 5])
    assert caught.value.field == "[1]"


# -- only JSON gets in ----------------------------------------------------------------------------


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("doc", "field", "fragment"),
    [
        (external(payload={"s": {1, 2}}), "payload.s", "JSON value"),
        (external(payload=(1, 2)), "payload", "tuple"),
        (external(payload=[1, float("nan")]), "payload[1]", "finite"),
        (external(payload={"n": 2**64}), "payload.n", "64 bits"),
        (external(payload="\ud800"), "payload", "surrogate"),
        (external(payload={1: "a"}), "payload", "keys must be"),
        (external(metadata={"when": datetime(2026, 1, 1)}), "metadata.when", "JSON value"),
        (external(payload={"a b": [0, {"c": object()}]}), 'payload["a b"][1].c', "JSON value"),
        (external(payload=nested_lists(500)), "payload" + "[0]" * 127, "deeper than 128"),
        (shell(args=("a",)), "payload.args", "tuple"),
    ],
)
def test_values_that_are_not_json_are_rejected_with_their_path(
    doc: object, field: str, fragment: str
) -> None:
    error = error_for(doc)
    assert error.field == field
    assert fragment in error.message


# -- JobDocument: the JSON schema for the HTTP API -----------------------------------------------------


def test_json_schema_describes_the_document() -> None:
    schema = JobDocument.model_json_schema()
    model = schema["$defs"]["JobDocument"]
    assert model["required"] == ["type"]
    assert model["additionalProperties"] is False
    assert set(model["properties"]) == set(JobDocument.model_fields)
    payload_refs = {option.get("$ref") for option in model["properties"]["payload"]["anyOf"]}
    assert {"#/$defs/ShellPayload", "#/$defs/TaskPayload"} <= payload_refs
    assert model["properties"]["on_success"]["anyOf"][0] == {"$ref": "#/$defs/JobDocument"}
    json.dumps(schema)  # a schema an OpenAPI document can embed


def test_json_schema_duration_pattern_matches_what_the_parser_accepts() -> None:
    timeout = JobDocument.model_json_schema()["$defs"]["ShellPayload"]["properties"]["timeout"]
    pattern = next(o for o in timeout["anyOf"][0]["anyOf"] if o["type"] == "string")["pattern"]
    for text in ["30", "1.5", "250ms", "1h30m", "2d"]:
        assert re.fullmatch(pattern, text)
    assert not re.fullmatch(pattern, "5x")


# -- document_from_job --------------------------------------------------------------------------------


def test_document_from_job_of_the_legacy_document() -> None:
    assert document_from_job(parse_job_document(LEGACY)) == {
        "type": "shell",
        "payload": {"command": "/usr/local/bin/process-data.sh", "args": ["--input", "/data/file.csv"]},
        "timeout": 300.0,
        "on_success": {"type": "shell", "payload": {"command": "/usr/local/bin/notify.sh"}},
    }


@pytest.mark.parametrize(
    "doc",
    [
        shell("ls -l"),
        shell("ls -l", args=[]),
        shell("ls", args=[]),
        shell("ls", args=["-l", "a b"]),
        shell("echo $X", shell=True, env={"X": "1"}, cwd="/"),
        external(run_at="2026-01-01T00:00:00Z", tags=["t"], metadata={"a": 1}, backoff_base="2h"),
    ],
)
def test_document_from_job_parses_back_to_the_same_job(doc: dict[str, Any]) -> None:
    job = parse_job_document(doc)
    assert parse_job_document(json.loads(json.dumps(document_from_job(job)))) == job


# -- properties over generated documents ------------------------------------------------------------

texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=12)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
names = st.text(string.ascii_letters + string.digits + "_.:-", min_size=1, max_size=16)
seconds = st.integers(0, 10**6) | st.floats(0, 1e6) | st.sampled_from(["250ms", "30s", "5m", "1h30m", "2d"])
positive_seconds = st.integers(1, 10**6) | st.floats(1, 1e6) | st.sampled_from(["1s", "5m", "1h30m", "2d"])
offsets = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
)
run_ats = st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=offsets).map(datetime.isoformat)
env_names = st.text(string.ascii_uppercase + "_", min_size=1, max_size=8)


def cased(word: str) -> st.SearchStrategy[str]:
    return st.sampled_from([word, word.upper(), word.capitalize()])


shell_payloads = st.one_of(
    st.fixed_dictionaries(
        {"command": st.sampled_from(["ls -l", "echo 'a b' c", "/bin/true"])},
        optional={"env": st.dictionaries(env_names, texts, max_size=2), "cwd": st.just("/tmp")},
    ),
    st.fixed_dictionaries(
        {"command": st.just("/usr/bin/env"), "args": st.lists(texts, max_size=3)},
        optional={"timeout": positive_seconds},
    ),
    st.fixed_dictionaries({"command": st.just("echo $HOME | wc"), "shell": st.just(True)}),
)
task_payloads = st.fixed_dictionaries(
    {"task": st.sampled_from(["billing.charge", "send"])},
    optional={
        "args": st.lists(json_values, max_size=3),
        "kwargs": st.dictionaries(texts, json_values, max_size=3),
    },
)
typed_payloads = st.one_of(
    st.tuples(cased("shell"), shell_payloads),
    st.tuples(cased("task"), task_payloads),
    st.tuples(cased("external"), json_values),
)
backoffs = st.tuples(st.floats(0.001, 1e4), st.floats(1, 100)).map(
    lambda pair: {"backoff_base": pair[0], "backoff_max": pair[0] * pair[1]}
)
OPTIONAL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "id": names,
    "queue": names,
    "priority": st.integers(-1_000_000, 1_000_000),
    "max_retries": st.integers(0, 1000),
    "backoff": cased("linear") | cased("fixed") | cased("exponential"),
    "timeout": positive_seconds,
    "lease": st.integers(1, 3600) | st.sampled_from(["1s", "90s"]),
    "idempotency_key": names,
    "tags": st.lists(names, max_size=5),
    "metadata": st.dictionaries(texts, json_values, max_size=3),
}


@st.composite
def documents(draw: st.DrawFn, depth: int = 2) -> dict[str, Any]:
    kind, payload = draw(typed_payloads)
    doc: dict[str, Any] = {"type": kind, "payload": payload}
    doc.update(draw(st.fixed_dictionaries({}, optional=OPTIONAL_FIELDS)))
    when = draw(st.sampled_from(["neither", "run_at", "delay"]))
    if when != "neither":
        doc[when] = draw(run_ats if when == "run_at" else seconds)
    if draw(st.booleans()):
        doc.update(draw(backoffs))
    for chain in ("on_success", "on_failure"):
        if depth > 0 and draw(st.booleans()):
            doc[chain] = draw(documents(depth - 1))
    return doc


@given(documents())
def test_parsed_jobs_survive_to_json_and_from_json(doc: dict[str, Any]) -> None:
    job = parse_job_document(doc)
    stored = json.loads(json.dumps(job.to_json()))
    assert NewJob.from_json(stored) == job


@given(documents())
def test_document_from_job_round_trips(doc: dict[str, Any]) -> None:
    job = parse_job_document(doc)
    shown = document_from_job(job)
    assert parse_job_document(json.loads(json.dumps(shown))) == job


@given(documents())
def test_kind_and_fields_come_from_the_document(doc: dict[str, Any]) -> None:
    job = parse_job_document(doc)
    assert job.kind.value == doc["type"].lower()
    assert job.queue == doc.get("queue", "default")
    assert job.tags == tuple(doc.get("tags", ()))
    assert (job.run_at is not None) == ("run_at" in doc)


field_names = st.sampled_from([*JobDocument.model_fields, "bogus"])
payload_keys = st.sampled_from([*ShellPayload.model_fields, *TaskPayload.model_fields, "bogus"])
near_payloads = json_values | st.dictionaries(payload_keys, json_values | st.lists(texts), max_size=4)


@given(
    st.dictionaries(field_names, json_values, max_size=6),
    near_payloads,
    st.sampled_from(["shell", "task", "external", "x"]),
)
def test_arbitrary_json_gives_a_job_or_an_invalid_job_error(
    fields: dict[str, Any], payload: Any, kind: str
) -> None:
    result = outcome({**fields, "type": kind, "payload": payload})
    if isinstance(result, InvalidJobError):
        root = re.split(r"[.\[]", result.field)[0]
        assert root in {*JobDocument.model_fields, "bogus"}
    else:
        assert result.kind.value == kind


def outcome(doc: object) -> NewJob | InvalidJobError:
    """The job, or the error: anything else (a pydantic ValidationError, a TypeError) fails the test."""
    try:
        return parse_job_document(doc)
    except InvalidJobError as exc:
        return exc


@given(
    st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True).filter(
        lambda k: k not in JobDocument.model_fields
    )
)
def test_any_unknown_field_is_named(key: str) -> None:
    error = error_for(external(**{key: 1}))
    assert (error.field, error.message.split(";")[0]) == (key, "unknown field")


def test_with_payload_changes_the_payload_and_keeps_every_other_field() -> None:
    chained = NewJob(JobKind.SHELL, {"argv": ["true"]})
    job = NewJob(
        JobKind.TASK,
        {"task": "a"},
        queue="q",
        id="job-1",
        priority=3,
        run_at=datetime(2030, 1, 1, tzinfo=UTC),
        delay=4.0,
        max_retries=7,
        backoff=Backoff(BackoffKind.LINEAR, 2.0, 9.0),
        timeout=5.0,
        lease=6.0,
        idempotency_key="k",
        on_success=chained,
        on_failure=chained,
        tags=("t",),
        metadata={"m": 1},
        checkpoint={"c": 2},
    )
    assert job.with_payload({"task": "b"}) == replace(job, payload={"task": "b"})
