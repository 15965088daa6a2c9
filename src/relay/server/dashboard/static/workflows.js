// A workflow run's page: each step's box in the graph and its row in the table follow the step's job
// live. A `job` event of one of the run's jobs (from the change feed) makes the page read the run
// again (/ui/api/workflow-run); so does a slow timer, for a server with the feed off. The geometry is
// the server's: only classes, attributes and text change here.

import { byData, getJSON, setState, timeAgo } from "./util.js";

const REFRESH_EVERY = 5000; // ms: the fallback when no event comes

function updateStep(graph, rows, step) {
  const node = byData(graph.querySelectorAll(".wf-node"), "step", step.name);
  if (node) {
    node.setAttribute("class", `wf-node state-${step.state}`);
    node.dataset.state = step.state;
    node.querySelector("[data-role=state]").textContent = step.state;
    node.querySelector("title").textContent = `${step.name}: ${step.state}`;
  }
  const row = byData(rows, "step", step.name);
  if (!row) return;
  setState(row.querySelector("[data-role=state]"), step.state);
  row.querySelector("[data-role=attempt]").textContent = String(step.attempt);
  row.querySelector("[data-role=started]").replaceChildren(timeAgo(step.started_at));
  row.querySelector("[data-role=finished]").replaceChildren(timeAgo(step.finished_at));
  const retry = row.querySelector("form.retry-step");
  if (retry) retry.hidden = !step.can_retry;
}

export function start() {
  const root = document.getElementById("workflow-run");
  if (!root) return {};
  const graph = document.getElementById("graph");
  const rows = document.querySelector("#steps tbody").rows;
  let jobIds;
  try {
    jobIds = new Set(JSON.parse(root.dataset.jobIds));
  } catch {
    jobIds = new Set();
  }
  let pending = null;
  const refresh = async () => {
    pending = null;
    let run;
    try {
      run = await getJSON(`/ui/api/workflow-run?id=${encodeURIComponent(root.dataset.runId)}`);
    } catch {
      return; // keep what is shown; the next event or tick tries again
    }
    root.dataset.state = run.state;
    setState(document.querySelector("#run-state [data-role=state]"), run.state);
    document.getElementById("run-done").textContent = String(run.done);
    for (const step of run.steps) updateStep(graph, rows, step);
    const cancel = document.querySelector("form.cancel-run");
    if (cancel) cancel.hidden = !run.can_cancel;
  };
  // Several events often come at once (a step ends, the next is released): read the run once for them.
  const soon = () => {
    if (pending === null) pending = setTimeout(refresh, 50);
  };
  setInterval(soon, REFRESH_EVERY);
  return {
    job(event) {
      if (jobIds.has(event.id)) soon();
    },
  };
}
