// Throughput charts as inline SVG, drawn from the server's buckets (rates per second, oldest first).

import { formatRate, svg } from "./util.js";

// The sum of every queue's series in a throughput snapshot.
export function total(snapshot) {
  const n = (snapshot.queues && Object.values(snapshot.queues)[0]?.completed.length) || 90;
  const completed = new Array(n).fill(0);
  const failed = new Array(n).fill(0);
  for (const series of Object.values(snapshot.queues || {})) {
    series.completed.forEach((v, i) => { completed[i] += v; });
    series.failed.forEach((v, i) => { failed[i] += v; });
  }
  return { completed, failed };
}

// A round upper bound for the y axis: 1, 2, 5, 10, 20, 50...
function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function points(values, x, y) {
  return values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
}

function series(root, values, x, y, name, baseline) {
  const line = points(values, x, y);
  const first = x(0).toFixed(1);
  const last = x(values.length - 1).toFixed(1);
  root.append(svg("polygon", { class: `area-${name}`, points: `${first},${baseline} ${line} ${last},${baseline}` }));
  root.append(svg("polyline", { class: `line-${name}`, points: line }));
}

function label(root, x, y, text, anchor) {
  const node = svg("text", { class: "axis-label", x, y, "text-anchor": anchor });
  node.textContent = text;
  root.append(node);
}

// The big chart: both series, a y axis, minutes on the x axis, a tooltip per bucket.
export function drawChart(container, data, bucketSeconds, end) {
  const width = container.clientWidth || 800;
  const height = container.clientHeight || 190;
  const m = { left: 44, right: 8, top: 10, bottom: 22 };
  const n = data.completed.length;
  const top = niceMax(Math.max(...data.completed, ...data.failed));
  const x = (i) => m.left + (i / Math.max(1, n - 1)) * (width - m.left - m.right);
  const y = (v) => m.top + (1 - v / top) * (height - m.top - m.bottom);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none" });
  for (const fraction of [0, 0.5, 1]) {
    const gy = y(top * fraction);
    root.append(svg("line", { class: "grid", x1: m.left, x2: width - m.right, y1: gy, y2: gy }));
    label(root, m.left - 6, gy + 4, formatRate(top * fraction), "end");
  }
  const minutes = (n * bucketSeconds) / 60;
  for (const back of [minutes, (minutes * 2) / 3, minutes / 3, 0]) {
    const i = n - 1 - (back * 60) / bucketSeconds;
    const anchor = back === minutes ? "start" : back === 0 ? "end" : "middle";
    label(root, x(Math.max(0, i)), height - 6, back === 0 ? "now" : `−${Math.round(back)}m`, anchor);
  }
  series(root, data.completed, x, y, "completed", y(0));
  series(root, data.failed, x, y, "failed", y(0));
  const step = (width - m.left - m.right) / Math.max(1, n - 1);
  for (let i = 0; i < n; i++) {
    const hover = svg("rect", { class: "hover", x: x(i) - step / 2, y: m.top, width: step, height: height - m.top - m.bottom });
    const title = svg("title");
    const at = new Date((end - (n - i) * bucketSeconds) * 1000).toISOString().slice(11, 19); // its start
    title.textContent = `${at} UTC: ${formatRate(data.completed[i])} completed/s, ${formatRate(data.failed[i])} failed/s`;
    hover.append(title);
    root.append(hover);
  }
  container.replaceChildren(root);
}

// A queue's sparkline: the same series, no axes, scaled to its own peak.
export function drawSpark(container, data, bucketSeconds) {
  const width = 130;
  const height = 28;
  const n = data.completed.length;
  const top = Math.max(...data.completed, ...data.failed) || 1;
  const x = (i) => (i / Math.max(1, n - 1)) * width;
  const y = (v) => 2 + (1 - v / top) * (height - 4);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none" });
  series(root, data.completed, x, y, "completed", height);
  series(root, data.failed, x, y, "failed", height);
  const title = svg("title");
  title.textContent = `last ${bucketSeconds} s: ${formatRate(data.completed[n - 1])} completed/s, ${formatRate(data.failed[n - 1])} failed/s`;
  root.append(title);
  container.replaceChildren(root);
}
