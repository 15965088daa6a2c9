// The dead-letter queue and the workers: small live touches on server-rendered tables.

import { byData, el, getJSON, stateBadge, timeAgo } from "./util.js";

const WORKERS_EVERY = 5000; // ms between refreshes of the workers table (workers are not in the feed)

// DLQ: a row whose job left `dead` (requeued elsewhere) shows its new state; new dead jobs are announced.
export function startDlq() {
  const body = document.querySelector("#dead-jobs tbody");
  if (!body) return {};
  return {
    job(event) {
      const row = byData(body.rows, "jobId", event.id);
      if (row && event.state !== "dead") {
        row.classList.add("stale");
        const cell = row.cells[row.cells.length - 1];
        cell.replaceChildren(event.state ? stateBadge(event.state) : el("span", { class: "muted" }, "deleted"));
      }
    },
  };
}

function workerRow(w) {
  const running = w.running.length
    ? w.running.map((id) => el("a", { class: "mono id", href: `/ui/jobs/${encodeURIComponent(id)}`, title: id }, id))
    : [el("span", { class: "muted" }, "idle")];
  return el("tr", {},
    el("td", { class: "mono" }, w.id),
    el("td", {}, w.host),
    el("td", { class: "num" }, w.pid),
    el("td", {}, ...w.queues.map((q) => el("span", { class: "tag" }, q))),
    el("td", { class: "num" }, `${w.running_count}/${w.concurrency}`),
    el("td", { class: "running" }, ...running),
    el("td", {}, timeAgo(w.started_at)),
    el("td", {}, timeAgo(w.last_heartbeat_at)));
}

export function startWorkers() {
  const body = document.getElementById("worker-rows");
  if (!body) return {};
  const refresh = async () => {
    try {
      const data = await getJSON("/ui/api/workers");
      body.replaceChildren(...data.workers.map(workerRow));
      document.getElementById("no-workers").hidden = data.workers.length > 0;
      document.getElementById("worker-count").textContent = `· ${data.workers.length} registered`;
    } catch {
      // Keep the table; the next refresh tries again.
    }
  };
  setInterval(refresh, WORKERS_EVERY);
  return {};
}

