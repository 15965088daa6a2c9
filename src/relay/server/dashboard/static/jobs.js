// The job list: rows follow `job` events (state, attempts); on the first page, new jobs that match
// the filters are added at the top (fetched one by one, a few at a time).

import { byData, el, getJSON, setState, stateBadge, timeAgo } from "./util.js";

const MAX_FETCH = 10; // new jobs fetched per round; more than that shows "new jobs arrived" instead
let body = null;
const pending = []; // ids of new jobs waiting to be fetched
let flushing = false;

function filters() {
  const d = body.dataset;
  return {
    firstPage: d.firstPage === "yes",
    states: d.states ? d.states.split(" ") : [],
    queues: JSON.parse(d.queues || "[]"),
    kind: d.kind,
    text: d.text === "yes",
    limit: Number(d.limit) || 50,
  };
}

function matches(job, f) {
  return (!f.states.length || f.states.includes(job.state))
    && (!f.queues.length || f.queues.includes(job.queue))
    && (!f.kind || f.kind === job.kind);
}

function row(job) {
  const tags = job.tags.map((tag) => el("span", { class: "tag" }, tag));
  const queueLink = el("a", { href: `/ui/jobs?${new URLSearchParams({ queue: job.queue })}` }, job.queue);
  return el("tr", { "data-job-id": job.id, class: "fresh" },
    el("td", {}, el("a", { class: "mono id", href: job.url, title: job.id }, job.id)),
    el("td", {}, queueLink),
    el("td", {}, job.kind),
    el("td", {}, stateBadge(job.state)),
    el("td", { class: "num", "data-role": "attempts" }, `${job.attempt}/${job.max_attempts}`),
    el("td", { class: "summary mono", title: job.summary }, job.summary),
    el("td", {}, ...tags),
    el("td", {}, timeAgo(job.created_at)),
    el("td", { "data-role": "updated" }, timeAgo(job.updated_at)));
}

function newestCreated() {
  const first = body.querySelector("tr[data-job-id] time");
  return first ? Date.parse(first.getAttribute("datetime")) : -Infinity;
}

async function flush() {
  if (flushing) return;
  flushing = true;
  try {
    while (pending.length) {
      const ids = pending.splice(0, MAX_FETCH);
      for (const id of ids.reverse()) {
        if (byData(body.rows, "jobId", id)) continue;
        let job;
        try {
          job = await getJSON(`/ui/api/job?id=${encodeURIComponent(id)}`);
        } catch {
          continue; // gone already, or not readable
        }
        // Only jobs newer than the top row: an old job the feed just noticed does not belong on top.
        if (!matches(job, filters()) || Date.parse(job.created_at) < newestCreated()) continue;
        body.prepend(row(job));
        document.getElementById("no-jobs")?.remove();
      }
      while (body.rows.length > filters().limit) body.deleteRow(-1);
    }
  } finally {
    flushing = false;
  }
}

function onJob(event) {
  const existing = byData(body.rows, "jobId", event.id);
  const f = filters();
  if (existing) {
    if (event.deleted) {
      existing.classList.add("stale");
      return;
    }
    setState(existing.querySelector("[data-role=state]"), event.state);
    const attempts = existing.querySelector("[data-role=attempts]");
    attempts.textContent = `${event.attempt}/${attempts.textContent.split("/")[1]}`;
    if (event.updated_at) existing.querySelector("[data-role=updated]").replaceChildren(timeAgo(event.updated_at));
    existing.classList.toggle("stale", f.states.length > 0 && !f.states.includes(event.state));
    return;
  }
  if (event.previous_state !== null || event.deleted || !f.firstPage || !matches(event, f)) return;
  if (f.text || pending.length >= MAX_FETCH * 5) {
    document.getElementById("new-jobs").hidden = false; // the text filter is the server's to apply
    return;
  }
  pending.push(event.id);
  flush();
}

export function start() {
  body = document.getElementById("job-rows");
  return body ? { job: onJob } : {};
}
