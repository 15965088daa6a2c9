// A job's page: its state and attempts follow `job` events; its log is tailed while it may still
// write (fetching the lines after the last one shown, every second).

import { el, formatWhen, getJSON, setState, stateBadge } from "./util.js";

const TAIL_EVERY = 1000; // ms between log fetches while the job runs or waits
const MAX_LINES = 20000; // lines kept on the page; older ones are dropped from view
let root = null;
let log = null;
let tailing = false;

function atBottom(node) {
  return node.scrollTop + node.clientHeight >= node.scrollHeight - 4;
}

function appendLines(lines) {
  if (!lines.length) return;
  const follow = atBottom(log);
  for (const line of lines) {
    log.append(el("span", { class: `line stream-${line.stream}`, "data-seq": line.seq },
      el("span", { class: "gutter" }, `#${line.attempt}`), line.text), "\n");
  }
  while (log.childElementCount > MAX_LINES) {
    log.firstElementChild.nextSibling?.remove(); // its newline
    log.firstElementChild.remove();
  }
  document.getElementById("log-empty").hidden = true;
  if (follow) log.scrollTop = log.scrollHeight;
}

async function fetchLogs() {
  const id = encodeURIComponent(root.dataset.jobId);
  for (;;) {
    const page = await getJSON(`/ui/api/logs?id=${id}&after_seq=${log.dataset.lastSeq}`);
    appendLines(page.lines);
    log.dataset.lastSeq = String(page.last_seq);
    if (!page.more) return page.state;
  }
}

// Fetch until the job is final and its last lines are in (a final job writes no more).
async function tail() {
  if (tailing) return;
  tailing = true;
  const status = document.getElementById("log-status");
  try {
    for (;;) {
      let state;
      try {
        state = await fetchLogs();
      } catch {
        state = null; // a hiccup: try again at the next tick
      }
      if (state && ["completed", "dead", "cancelled"].includes(state)) break;
      if (status) status.textContent = "tailing…";
      await new Promise((resolve) => setTimeout(resolve, TAIL_EVERY));
    }
  } finally {
    tailing = false;
    if (status) status.textContent = "";
  }
}

function setField(name, text) {
  const node = root.querySelector(`[data-field="${name}"]`);
  if (node) node.textContent = text;
}

function attemptRow(attempt) {
  const error = attempt.error;
  const cell = el("td");
  if (error) {
    const line = el("div", { class: "error-line" }, el("strong", {}, error.type), `: ${error.message}`);
    if (error.exit_code !== null) line.append(" ", el("span", { class: "muted" }, `(exit code ${error.exit_code})`));
    cell.append(line);
    if (error.traceback) cell.append(el("details", {}, el("summary", {}, "Traceback"), el("pre", { class: "code" }, error.traceback)));
    if (error.stderr_tail) cell.append(el("details", {}, el("summary", {}, "stderr"), el("pre", { class: "code" }, error.stderr_tail)));
  } else {
    cell.append(el("span", { class: "muted" }, "—"));
  }
  return el("tr", {}, el("td", { class: "num" }, attempt.number), el("td", {}, stateBadge(attempt.outcome)), cell,
    el("td", {}, error ? formatWhen(error.at) : ""));
}

function render(job) {
  root.dataset.state = job.state;
  setState(root.querySelector("h1 [data-role=state]"), job.state);
  setField("attempts", `${job.attempt} of ${job.max_attempts}`);
  setField("run_at", formatWhen(job.run_at));
  setField("started_at", formatWhen(job.started_at));
  setField("finished_at", formatWhen(job.finished_at));
  setField("worker_id", job.worker_id || "—");
  setField("progress", job.progress === null ? "—" : `${Math.round(job.progress * 100)}%`);
  setField("result", JSON.stringify(job.result, null, 2));
  const held = root.querySelector("[data-role=held]");
  if (held) held.hidden = !job.held;
  const retry = root.querySelector("form[data-action=retry]");
  const cancel = root.querySelector("form[data-action=cancel]");
  if (retry) retry.hidden = !job.can_retry;
  if (cancel) cancel.hidden = !job.can_cancel;
  const rows = job.attempts.map(attemptRow);
  if (!rows.length) rows.push(el("tr", { class: "empty-row" }, el("td", { colspan: 4 }, "Not run yet.")));
  document.querySelector("#attempts tbody").replaceChildren(...rows);
  if (!job.final) tail();
}

async function refresh() {
  try {
    render(await getJSON(`/ui/api/job?id=${encodeURIComponent(root.dataset.jobId)}`));
  } catch {
    // The job was deleted (purged, pruned) or is no longer readable: keep what is shown.
  }
}

export function start() {
  root = document.getElementById("job");
  log = document.getElementById("log");
  if (!root || !log) return {};
  if (root.dataset.final !== "yes" || log.dataset.more === "yes") tail();
  return {
    job(event) {
      if (event.id === root.dataset.jobId) refresh();
    },
  };
}
