// The dashboard's entry point: starts the script of this page and the live connection.
// Loaded as a module from this origin only (Content-Security-Policy: script-src 'self').

import { connect } from "./live.js";
import { start as startJob } from "./job.js";
import { start as startJobs } from "./jobs.js";
import { startDlq, startWorkers } from "./lists.js";
import { start as startOverview } from "./overview.js";
import { start as startQueue } from "./queue.js";
import { start as startSchedules } from "./schedules.js";
import { tickAges } from "./util.js";
import { start as startWorkflows } from "./workflows.js";

const PAGES = {
  overview: startOverview,
  jobs: () => (document.getElementById("job") ? startJob() : startJobs()),
  queue: startQueue,
  dlq: startDlq,
  schedules: startSchedules,
  workers: startWorkers,
  workflows: startWorkflows,
};

function main() {
  const page = PAGES[document.body.dataset.page];
  if (!page) return;
  const handlers = page();
  setInterval(tickAges, 1000);
  if (document.body.dataset.live === "on") connect(handlers);
}

main();
