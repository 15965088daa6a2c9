// The overview: queue rows and totals follow `queue` events; charts follow `throughput` events.

import { drawChart, drawSpark, total } from "./chart.js";
import { byData, duration, el, ageOf, formatCount, formatRate } from "./util.js";

const STATES = ["pending", "scheduled", "running", "completed", "failed", "dead", "cancelled"];
const counts = new Map(); // queue name -> counts by state, as last seen
let latest = null; // the last throughput snapshot

function rows() {
  return document.querySelectorAll("#queues tbody tr[data-queue]");
}

function jobsLink(params) {
  const query = new URLSearchParams(params);
  return `/ui/jobs?${query.toString()}`;
}

// A row for a queue that appeared after the page was rendered (no actions: reload for those).
function newRow(name) {
  const cells = [
    el("th", { scope: "row", class: "queue-name" },
      el("a", { href: `/ui/queues/${encodeURIComponent(name)}` }, name), " ",
      el("span", { class: "badge paused", "data-role": "paused", hidden: true }, "paused")),
  ];
  for (const state of STATES) {
    cells.push(el("td", { class: "num" },
      el("a", { class: `count zero state-${state}`, "data-count": state, href: jobsLink({ queue: name, state }) }, "0")));
  }
  cells.push(el("td", { class: "num", "data-role": "oldest", "data-since": "" }, "—"));
  cells.push(el("td", { class: "limits-cell", "data-role": "limits", "data-concurrency": "" },
    el("span", { class: "muted" }, "—")));
  cells.push(el("td", { class: "spark-cell" }, el("div", { class: "spark", "data-role": "spark" })));
  cells.push(el("td", { class: "actions" }));
  const row = el("tr", { "data-queue": name, class: "fresh" }, ...cells);
  document.querySelector("#queues .empty-row")?.remove();
  document.querySelector("#queues tbody").append(row);
  return row;
}

function updateRow(queue) {
  const row = byData(rows(), "queue", queue.name) || newRow(queue.name);
  for (const link of row.querySelectorAll("[data-count]")) {
    const n = queue.counts[link.dataset.count] ?? 0;
    const text = formatCount(n);
    if (link.textContent !== text) {
      link.textContent = text;
      link.classList.toggle("zero", n === 0);
      link.classList.remove("changed");
      void link.offsetWidth; // restart the highlight animation
      link.classList.add("changed");
    }
  }
  // A concurrency limit's cell says how many of its slots are in use: the running count.
  const limits = row.querySelector("[data-role=limits]");
  const slots = limits?.querySelector("[data-role=slots]");
  if (slots && limits.dataset.concurrency) {
    const running = formatCount(queue.counts.running ?? 0);
    slots.textContent = `${running}/${formatCount(Number(limits.dataset.concurrency))} running`;
  }
  row.dataset.paused = queue.paused ? "yes" : "no";
  row.querySelector("[data-role=paused]").hidden = !queue.paused;
  const pause = row.querySelector("form.pause");
  const resume = row.querySelector("form.resume");
  if (pause) pause.hidden = queue.paused;
  if (resume) resume.hidden = !queue.paused;
  const oldest = row.querySelector("[data-role=oldest]");
  oldest.dataset.since = queue.oldest_pending_at || "";
  const age = queue.oldest_pending_at ? ageOf(queue.oldest_pending_at) : null;
  oldest.textContent = age === null ? "—" : duration(age);
}

function updateTotals() {
  for (const tile of document.querySelectorAll("[data-total]")) {
    let sum = 0;
    for (const byState of counts.values()) sum += byState[tile.dataset.total] ?? 0;
    tile.textContent = formatCount(sum);
  }
  const label = document.getElementById("queue-count");
  if (label) label.textContent = `· ${rows().length}`;
}

function drawAll() {
  const chart = document.getElementById("throughput-chart");
  if (!chart || !latest) return;
  const sums = total(latest);
  drawChart(chart, sums, latest.bucket_seconds, latest.end);
  const rate = document.getElementById("rate-now");
  if (rate) {
    const minute = Math.max(1, Math.round(60 / latest.bucket_seconds)); // the newest buckets: a minute
    const mean = (values) => values.slice(-minute).reduce((a, b) => a + b, 0) / minute;
    rate.textContent = `last minute: ${formatRate(mean(sums.completed))}/s completed, ${formatRate(mean(sums.failed))}/s failed`;
  }
  for (const row of rows()) {
    const series = latest.queues[row.dataset.queue];
    const spark = row.querySelector("[data-role=spark]");
    if (spark && series) drawSpark(spark, series, latest.bucket_seconds);
    else if (spark) spark.replaceChildren(); // idle for the whole window
  }
}

export function start() {
  const chart = document.getElementById("throughput-chart");
  if (chart && chart.dataset.throughput) {
    latest = JSON.parse(chart.dataset.throughput);
    drawAll();
  }
  for (const row of rows()) {
    const byState = {};
    for (const link of row.querySelectorAll("[data-count]")) {
      byState[link.dataset.count] = Number(link.textContent.replace(/,/g, ""));
    }
    counts.set(row.dataset.queue, byState);
  }
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(drawAll, 150);
  });
  return {
    queue(queue) {
      counts.set(queue.name, queue.counts);
      updateRow(queue);
      updateTotals();
    },
    throughput(snapshot) {
      latest = snapshot;
      drawAll();
    },
  };
}
