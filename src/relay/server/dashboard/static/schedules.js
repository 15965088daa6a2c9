// The schedules: each row's next and last run and its paused flag are read again every five seconds
// (schedules are not in the change feed); added or removed schedules are announced.

import { byData, el, getJSON, timeAgo, timeUntil } from "./util.js";

const REFRESH_EVERY = 5000; // ms

function update(row, schedule) {
  row.dataset.paused = schedule.paused ? "yes" : "no";
  row.querySelector("[data-role=paused]").hidden = !schedule.paused;
  row.querySelector("[data-role=next-paused]").hidden = !schedule.paused;
  const next = row.querySelector("[data-role=next-time]");
  next.hidden = schedule.paused;
  next.replaceChildren(timeUntil(schedule.next_run_at));
  const last = [timeAgo(schedule.last_run_at)];
  if (schedule.last_job_id) {
    last.push(el("div", {},
      el("a", { class: "mono id", href: schedule.last_job_url, title: schedule.last_job_id }, schedule.last_job_id)));
  }
  row.querySelector("[data-role=last]").replaceChildren(...last);
  const pause = row.querySelector("form.pause");
  const resume = row.querySelector("form.resume");
  if (pause) pause.hidden = schedule.paused;
  if (resume) resume.hidden = !schedule.paused;
}

export function start() {
  const body = document.querySelector("#schedules tbody");
  if (!body) return {};
  const refresh = async () => {
    let data;
    try {
      data = await getJSON("/ui/api/schedules");
    } catch {
      return; // keep the table; the next refresh tries again
    }
    const names = new Set();
    let added = false;
    for (const schedule of data.schedules) {
      names.add(schedule.name);
      const row = byData(body.rows, "schedule", schedule.name);
      if (row) update(row, schedule);
      else added = true;
    }
    const removed = [...body.rows].some((row) => !names.has(row.dataset.schedule));
    document.getElementById("schedules-changed").hidden = !(added || removed);
  };
  setInterval(refresh, REFRESH_EVERY);
  return {};
}
