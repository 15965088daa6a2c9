-- Workflows (issue 13): persisted DAG runs of jobs. Applied by relay.storage.sqlite.migrate inside one
-- BEGIN IMMEDIATE transaction, statement by statement.
--
-- ALTER TABLE appends the two job columns after dead_blocks, where JOB_COLUMNS
-- (relay.storage.sql_rows) expects them. Both are NULL for a job outside a workflow, so the inserts of
-- such jobs (job_insert_plain, job_insert, job_insert_flow) bind no more values than before.

-- The run a job is a step of (workflow_runs.id), and the step's name in that run.
ALTER TABLE jobs ADD COLUMN workflow_run_id TEXT;
ALTER TABLE jobs ADD COLUMN workflow_step TEXT;

-- One row per run. `seq` orders runs (newest first in workflow_list, whose cursor it is); `steps` is the
-- run's graph as JSON, in definition order: [[name, [depends_on...], allow_failure, job_id], ...].
CREATE TABLE workflow_runs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    workflow TEXT NOT NULL,
    policy TEXT NOT NULL,
    params TEXT NOT NULL,
    cancelled INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    steps TEXT NOT NULL
) STRICT;

-- workflow_list of one workflow, newest first.
CREATE INDEX workflow_runs_workflow ON workflow_runs (workflow, seq);
