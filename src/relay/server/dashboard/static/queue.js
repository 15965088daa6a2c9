// A queue's page: its counts and paused flag follow `queue` events; its limits in words, the tokens
// in its bucket and the slots in use are read again every two seconds (tokens refill between events).

import { getJSON, formatCount } from "./util.js";

const REFRESH_EVERY = 2000; // ms

let root = null;
let fetching = false;

function showQueue(queue) {
  for (const node of root.querySelectorAll("[data-count]")) {
    node.textContent = formatCount(queue.counts[node.dataset.count] ?? 0);
  }
  root.dataset.paused = queue.paused ? "yes" : "no";
  root.querySelector("[data-role=paused]").hidden = !queue.paused;
  const pause = root.querySelector("form.pause");
  const resume = root.querySelector("form.resume");
  if (pause) pause.hidden = queue.paused;
  if (resume) resume.hidden = !queue.paused;
  const empty = document.getElementById("queue-empty");
  if (empty) empty.hidden = Object.values(queue.counts).some((n) => n > 0);
  const oldest = root.querySelector("[data-role=oldest]");
  if (oldest) oldest.dataset.since = queue.oldest_pending_at || ""; // shown by tickAges
}

function showLimits(view) {
  for (const node of root.querySelectorAll("[data-limit]")) {
    const text = view[node.dataset.limit];
    if (typeof text === "string") node.textContent = text;
  }
}

async function refresh() {
  if (fetching) return;
  fetching = true;
  try {
    const data = await getJSON(`/ui/api/queue?name=${encodeURIComponent(root.dataset.queue)}`);
    showQueue(data.queue);
    showLimits(data.view);
  } catch {
    // Keep what is shown; the next refresh tries again.
  } finally {
    fetching = false;
  }
}

export function start() {
  root = document.getElementById("queue");
  if (!root) return {};
  setInterval(refresh, REFRESH_EVERY);
  return {
    queue(queue) {
      if (queue.name !== root.dataset.queue) return;
      showQueue(queue);
      refresh(); // the slots in use follow the running count
    },
  };
}
