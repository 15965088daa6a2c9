"""The dashboard's defences, through HTTP: escaping, headers, CSRF and Origin checks, login and scopes."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import httpx

from relay.app import Relay
from relay.server import ServerSettings, mint_token
from relay.server.dashboard.security import CONTENT_SECURITY_POLICY
from relay.types import JobKind, JobState, NewJob

from . import jobs
from .conftest import BASE, SECRET, csrf_of, dashboard, post_form
from .helpers import HOSTILE

DASHBOARD = Path(__file__).parents[2] / "src" / "relay" / "server" / "dashboard"
AUTH = ServerSettings(events_interval=0, jwt_secret=SECRET)


def job_path(job_id: str) -> str:
    return "/ui/jobs/" + quote(job_id, safe="")


def queue_path(name: str) -> str:
    return "/ui/queues/" + quote(name, safe="")


def schedule_path(name: str) -> str:
    return "/ui/schedules#" + quote(f"schedule-{name}", safe="")


def assert_no_markup_from_data(body: str) -> None:
    for text in HOSTILE:
        if any(c in text for c in "<>\"'"):
            assert text not in body, f"unescaped: {text}"
    assert "<script>window" not in body
    assert "onerror=" not in body.replace("onerror=&#34;", "").replace("onerror=\\&#34;", "")
    assert 'href="javascript:' not in body


async def test_every_value_from_a_job_is_escaped(relay: Relay) -> None:
    found = await jobs.hostile(relay)
    async with dashboard(relay) as client:
        pages = ["/", "/ui/jobs", "/ui/dlq", "/ui/workers", f"/ui/jobs?text={quote(HOSTILE[0])}"]
        pages += [job_path(job.id) for job in found]
        for path in pages:
            response = await client.get(path)
            assert response.status_code == 200, path
            assert_no_markup_from_data(response.text)
        job_page = (await client.get(job_path(found[0].id))).text
        assert "&lt;script&gt;window.__xss=1;alert(1)&lt;/script&gt;" in job_page
        # Shown as text: in its queue, tags, payload, metadata, error, traceback, stderr and log.
        assert job_page.count("&lt;script&gt;window.__xss=1") >= 8
        assert "&lt;img src=x onerror=&#34;window.__xss=2;alert(2)&#34;&gt;" in job_page  # a log line


async def test_schedules_and_queue_pages_escape_every_value(relay: Relay) -> None:
    found = await jobs.hostile(relay)
    schedules = await jobs.hostile_schedules(relay)
    async with dashboard(relay) as client:
        pages = ["/", "/ui/schedules"] + [queue_path(s.job.queue) for s in schedules]
        pages += [job_path(job.id) for job in found]  # rate, concurrency and ordering keys; a schedule
        for path in pages:
            response = await client.get(path)
            assert response.status_code == 200, path
            assert_no_markup_from_data(response.text)
        listing = (await client.get("/ui/schedules")).text
        # Shown as text: its name, queue, command (and in the attributes of its row and forms).
        assert listing.count("&lt;script&gt;window.__xss=1;alert(1)&lt;/script&gt;") >= 4
        queue_page = (await client.get(queue_path(schedules[1].job.queue))).text
        assert "&lt;img src=x onerror=&#34;window.__xss=2;alert(2)&#34;&gt;" in queue_page
        data = (await client.get("/ui/api/schedules")).json()
        assert sorted(s["name"] for s in data["schedules"]) == sorted(s.name for s in schedules)
        # A refused limits form shows what was typed, and the error that quotes it, as text.
        refused = await post_form(
            client,
            "/ui/actions/limits",
            {"queue": schedules[0].job.queue, "rate": HOSTILE[2], "burst": HOSTILE[0]},
        )
        assert refused.status_code == 422
        assert_no_markup_from_data(refused.text)
        assert 'data-error="rate">' in refused.text
        # Pausing one comes back to its row, by a link that stays on this site.
        paused = await post_form(
            client,
            "/ui/actions/schedule-pause",
            {"schedule": schedules[0].name, "next": schedule_path(schedules[0].name)},
        )
        assert paused.status_code == 303
        assert paused.headers["location"].startswith("/ui/schedules?notice=schedule-paused#schedule-%3C")


async def test_data_endpoints_are_json_never_html(relay: Relay) -> None:
    [job, *_] = await jobs.hostile(relay)
    async with dashboard(relay) as client:
        for path in (
            f"/ui/api/job?id={quote(job.id)}",
            f"/ui/api/logs?id={quote(job.id)}",
            "/ui/api/workers",
        ):
            response = await client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"] == "application/json"
            assert response.headers["x-content-type-options"] == "nosniff"
        logs = (await client.get(f"/ui/api/logs?id={quote(job.id)}")).json()
        assert [line["text"] for line in logs["lines"]] == list(HOSTILE)


def test_no_template_or_script_turns_data_into_markup() -> None:
    for template in (DASHBOARD / "templates").glob("*.html"):
        text = template.read_text()
        assert not re.search(r"\|\s*safe\b|autoescape\s+false|\|\s*tojson", text), template.name
        assert "<script>" not in text, template.name  # no inline script
        assert not re.search(r"\son[a-z]+=", text), template.name  # no inline event handler
        assert "style=" not in text, template.name  # CSP forbids inline styles
    for script in (DASHBOARD / "static").glob("*.js"):
        text = script.read_text()
        for sink in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            assert sink not in text, f"{script.name} uses {sink}"


async def test_every_dashboard_response_has_a_strict_csp(relay: Relay) -> None:
    async with dashboard(relay) as client:
        for path in (
            "/",
            "/ui/jobs",
            "/ui/dlq",
            "/ui/workers",
            "/ui/schedules",
            "/ui/queues/emails",
            "/ui/queues/bad%20name",
            "/ui/api/schedules",
            "/ui/jobs/nope",
            "/ui/nothing-here",
            "/ui/static/dashboard.js",
            "/ui/static/dashboard.css",
            "/ui/api/job?id=nope",
        ):
            response = await client.get(path)
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
        policy = dict(part.split(" ", 1) for part in CONTENT_SECURITY_POLICY.split("; "))
        assert policy["script-src"] == "'self'"
        assert policy["style-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        assert policy["default-src"] == "'none'"
        assert (await client.get("/ui/jobs/nope")).status_code == 404
        assert (await client.get("/")).headers["cache-control"] == "no-store"
        assert (await client.get("/ui/api/job?id=nope")).headers["cache-control"] == "no-store"
        assert (await client.get("/ui/static/util.js")).headers["cache-control"] == "no-cache"
        api = await client.get("/api/v1/queues")
        assert api.status_code == 200  # the API is untouched
        assert "content-security-policy" not in api.headers


async def test_a_post_without_the_csrf_token_is_refused(relay: Relay) -> None:
    job = await jobs.dead(relay)
    async with dashboard(relay) as client:
        token = csrf_of((await client.get("/")).text)
        ours = {"origin": BASE}
        refused = [
            await client.post("/ui/actions/retry", data={"job_id": job.id}, headers=ours),
            await client.post("/ui/actions/retry", data={"job_id": job.id, "csrf": "0" * 64}, headers=ours),
            await client.post("/ui/actions/retry", data={"job_id": job.id, "csrf": token}),  # no Origin
            await client.post(
                "/ui/actions/retry",
                data={"job_id": job.id, "csrf": token},
                headers={"origin": "http://evil.example"},
            ),
            await client.post(
                "/ui/actions/retry",
                data={"job_id": job.id, "csrf": token},
                headers={"origin": BASE, "sec-fetch-site": "same-site"},
            ),
            await client.post(
                "/ui/actions/retry", data={"job_id": job.id, "csrf": token}, headers={"referer": "null"}
            ),
        ]
        assert [r.status_code for r in refused] == [403] * len(refused)
        assert "CSRF" in refused[0].text
        assert "did not come from a page" in refused[2].text
        assert refused[0].headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        # Another browser (another session cookie) cannot use this session's token.
        async with httpx.AsyncClient(transport=client._transport, base_url=BASE) as other:
            await other.get("/")
            stolen = await other.post(
                "/ui/actions/retry", data={"job_id": job.id, "csrf": token}, headers=ours
            )
            assert stolen.status_code == 403
        assert (await client.get("/ui/actions/retry")).status_code == 405
        assert (await relay.storage.job_get(job.id)).state is JobState.DEAD  # type: ignore[union-attr]
        # With the token and our Origin (or only our Referer), it works.
        done = await client.post(
            "/ui/actions/retry", data={"job_id": job.id, "csrf": token}, headers={"referer": f"{BASE}/ui/dlq"}
        )
        assert done.status_code == 303
        assert (await relay.storage.job_get(job.id)).state is JobState.PENDING  # type: ignore[union-attr]


async def test_flow_control_actions_need_the_csrf_token_and_our_origin(relay: Relay) -> None:
    await jobs.insert(relay, queue="emails")
    await jobs.schedule(relay, "nightly", "0 3 * * *", NewJob(JobKind.EXTERNAL, {}, queue="emails"))
    paused = await jobs.schedule(relay, "hourly", "@hourly", NewJob(JobKind.EXTERNAL, {}, queue="emails"))
    await relay.storage.schedule_set_paused(paused.name, True, None)
    posts = {
        "limits": {"queue": "emails", "rate": "1/s", "concurrency": "1"},
        "schedule-pause": {"schedule": "nightly"},
        "schedule-resume": {"schedule": "hourly"},
    }
    async with dashboard(relay) as client:
        token = csrf_of((await client.get("/ui/queues/emails")).text)
        for action, fields in posts.items():
            path = f"/ui/actions/{action}"
            refused = [
                await client.post(path, data=fields, headers={"origin": BASE}),
                await client.post(path, data={**fields, "csrf": "0" * 64}, headers={"origin": BASE}),
                await client.post(path, data={**fields, "csrf": token}),  # no Origin
                await client.post(
                    path, data={**fields, "csrf": token}, headers={"origin": "http://evil.example"}
                ),
                await client.post(
                    path,
                    data={**fields, "csrf": token},
                    headers={"origin": BASE, "sec-fetch-site": "cross-site"},
                ),
            ]
            assert [r.status_code for r in refused] == [403] * len(refused), action
            assert (await client.get(path)).status_code == 405
        [queue] = await relay.storage.queue_list()
        assert not queue.limits.limited
        assert {s.name: s.paused for s in await relay.storage.schedule_list()} == {
            "hourly": True,
            "nightly": False,
        }
        for action, fields in posts.items():  # with the token and our Origin, each works
            assert (await post_form(client, f"/ui/actions/{action}", fields)).status_code == 303, action
        assert {s.name: s.paused for s in await relay.storage.schedule_list()} == {
            "hourly": False,
            "nightly": True,
        }


async def test_without_auth_only_loopback_names_are_answered(relay: Relay) -> None:
    async with dashboard(relay) as client:
        for host in ("localhost:4000", "127.0.0.1:4000", "[::1]:4000", "127.0.0.1"):
            assert (await client.get("/", headers={"host": host})).status_code == 200, host
        rebound = await client.get("/", headers={"host": "evil.example:4000"})  # DNS rebinding
        assert rebound.status_code == 421
        assert rebound.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    async with dashboard(relay, AUTH) as client:  # with auth, any name: the token protects it
        assert (await client.get("/ui/login", headers={"host": "relay.example.com"})).status_code == 200


async def test_the_session_cookie_is_httponly_and_strict(relay: Relay) -> None:
    async with dashboard(relay) as client:
        cookie = (await client.get("/")).headers["set-cookie"]
        assert cookie.startswith("relay_session=")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/" in cookie
        assert "set-cookie" not in (await client.get("/ui/jobs")).headers  # one session per browser


async def test_redirects_after_an_action_stay_on_this_site(relay: Relay) -> None:
    async with dashboard(relay) as client:
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
            response = await post_form(client, "/ui/actions/pause", {"queue": "emails", "next": target})
            assert response.status_code == 303
            assert response.headers["location"] == "/?notice=paused", target
        kept = await post_form(
            client, "/ui/actions/resume", {"queue": "emails", "next": "/ui/jobs?queue=emails"}
        )
        assert kept.headers["location"] == "/ui/jobs?queue=emails&notice=resumed"
        login = await client.get("/ui/login?next=//evil.example")
        assert login.status_code == 303
        assert login.headers["location"] == "/"


async def test_with_auth_on_the_dashboard_asks_for_a_token(relay: Relay) -> None:
    async with dashboard(relay, AUTH) as client:
        page = await client.get("/ui/jobs?state=dead")
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fstate%3Ddead"
        assert (await client.get("/ui/api/events")).status_code == 401
        # A link from another site arrives without the SameSite=Strict cookies: the page reloads itself
        # once (same-site, so with them) instead of asking a logged-in person to log in again.
        linked = await client.get("/ui/jobs", headers={"sec-fetch-site": "cross-site"})
        assert linked.status_code == 200
        assert '<meta http-equiv="refresh" content="0">' in linked.text
        form = await client.get("/ui/login?next=/ui/jobs")
        assert form.status_code == 200
        assert 'name="token"' in form.text
        bad = await post_form(
            client, "/ui/login", {"token": "not-a-token", "next": "/ui/jobs"}, from_page="/ui/login"
        )
        assert bad.status_code == 401
        assert "was refused" in bad.text
        token = mint_token(SECRET, "read:*", "1h")
        good = await post_form(
            client, "/ui/login", {"token": token, "next": "/ui/jobs"}, from_page="/ui/login"
        )
        assert good.status_code == 303
        assert good.headers["location"] == "/ui/jobs"
        cookies = good.headers.get_list("set-cookie")
        token_cookie = next(c for c in cookies if c.startswith("relay_token="))
        assert "HttpOnly" in token_cookie
        assert "SameSite=strict" in token_cookie
        assert (await client.get("/ui/jobs")).status_code == 200
        assert "Log out" in (await client.get("/")).text
        out = await post_form(client, "/ui/logout", {}, from_page="/")
        assert out.status_code == 303
        assert (await client.get("/")).status_code == 303


async def test_actions_check_the_tokens_scopes(relay: Relay) -> None:
    emails = await jobs.dead(relay, queue="emails")
    billing = await jobs.dead(relay, queue="billing")
    async with dashboard(relay, AUTH) as client:
        client.cookies.set("relay_token", mint_token(SECRET, "read:* admin:emails", "1h"))
        overview = (await client.get("/")).text
        assert 'data-action="pause"' in overview  # on emails only
        assert (await post_form(client, "/ui/actions/retry", {"job_id": emails.id})).status_code == 303
        refused = await post_form(client, "/ui/actions/retry", {"job_id": billing.id})
        assert refused.status_code == 403
        assert "admin:billing" in refused.text
        assert (await post_form(client, "/ui/actions/purge", {"confirm": "yes"})).status_code == 403
        assert (await post_form(client, "/ui/actions/pause", {"queue": "billing"})).status_code == 403

        client.cookies.set("relay_token", mint_token(SECRET, "read:emails", "1h"))
        listing = (await client.get("/ui/jobs")).text
        assert emails.id in listing
        assert billing.id not in listing
        assert (await client.get(job_path(billing.id))).status_code == 404  # its existence does not leak
        assert (await client.get("/ui/workers")).status_code == 403
        assert 'data-action="pause"' not in (await client.get("/")).text

        client.cookies.set("relay_token", mint_token(SECRET, "read:*", "1s", now=0))  # expired long ago
        assert (await client.get("/")).status_code == 303
