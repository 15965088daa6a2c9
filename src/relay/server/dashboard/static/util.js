// Small helpers shared by the dashboard's scripts. Every value from the server goes into the page as
// text (textContent, attributes set one by one): these scripts never build HTML from strings.

const SVG = "http://www.w3.org/2000/svg";

// el("td", {class: "num"}, "3") -> <td class="num">3</td>. Children are nodes or text.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  setAttrs(node, attrs);
  return node;
}

function setAttrs(node, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
}

// The server's clock minus the browser's, so that ages agree with the server's "now".
const serverNow = Date.parse(document.body.dataset.serverNow || "");
export const clockOffset = Number.isNaN(serverNow) ? 0 : serverNow - Date.now();

export function now() {
  return Date.now() + clockOffset;
}

// 4s, 3m 12s, 2h 5m, 3d 4h: the same as the server's `duration` filter.
export function duration(seconds) {
  let s = Math.max(0, Math.floor(seconds));
  const units = [["d", 86400, "h", 3600], ["h", 3600, "m", 60], ["m", 60, "s", 1]];
  for (const [unit, size, sub, subSize] of units) {
    if (s >= size) {
      const rest = Math.floor((s % size) / subSize);
      return rest ? `${Math.floor(s / size)}${unit} ${rest}${sub}` : `${Math.floor(s / size)}${unit}`;
    }
  }
  return `${s}s`;
}

export function ageOf(iso) {
  const at = Date.parse(iso);
  return Number.isNaN(at) ? null : (now() - at) / 1000;
}

export function formatCount(n) {
  return Number(n).toLocaleString("en-US");
}

export function formatRate(perSecond) {
  if (perSecond === 0) return "0";
  if (perSecond < 0.1) return perSecond.toFixed(2);
  if (perSecond < 10) return perSecond.toFixed(1);
  return Math.round(perSecond).toLocaleString("en-US");
}

export function formatWhen(iso) {
  if (!iso) return "—";
  return new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC");
}

// Find the element among `nodes` whose data-<key> equals `value` (never a CSS selector built from
// data: a queue name or job id could break out of it).
export function byData(nodes, key, value) {
  for (const node of nodes) {
    if (node.dataset[key] === value) return node;
  }
  return null;
}

export async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

export function setState(badge, state) {
  badge.textContent = state;
  badge.className = `badge state-${state}`;
}

export function stateBadge(state) {
  return el("span", { class: `badge state-${state}`, "data-role": "state" }, state);
}

export function timeAgo(iso) {
  if (!iso) return el("span", { class: "muted" }, "—");
  const age = ageOf(iso);
  return el("time", { datetime: iso, title: formatWhen(iso), "data-age": true }, `${duration(age)} ago`);
}

// "in 4m", or "due 5s ago" for a tick that came and was not enqueued yet: the server's `until`.
export function untilText(iso) {
  const age = iso ? ageOf(iso) : null;
  if (age === null) return null;
  return age < 0 ? `in ${duration(-age)}` : `due ${duration(age)} ago`;
}

export function timeUntil(iso) {
  const text = untilText(iso);
  if (text === null) return el("span", { class: "muted" }, "—");
  return el("time", { datetime: iso, title: formatWhen(iso), "data-until": true }, text);
}

// Keep every <time data-age>, <time data-until> and [data-since] cell current, once a second.
export function tickAges() {
  for (const node of document.querySelectorAll("time[data-age]")) {
    const age = ageOf(node.getAttribute("datetime"));
    if (age !== null) node.textContent = `${duration(age)} ago`;
  }
  for (const node of document.querySelectorAll("time[data-until]")) {
    const text = untilText(node.getAttribute("datetime"));
    if (text !== null) node.textContent = text;
  }
  for (const node of document.querySelectorAll("[data-since]")) {
    const age = node.dataset.since ? ageOf(node.dataset.since) : null;
    node.textContent = age === null ? "—" : duration(age);
  }
}
