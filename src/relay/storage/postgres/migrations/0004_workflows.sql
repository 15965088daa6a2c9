-- 0004: workflows (issue 13): persisted runs whose steps are ordinary jobs.

-- The run a job is a step of (relay.workflow_runs.id) and the step's name in it; NULL outside a run.
-- Appended where relay.storage.sql_rows.JOB_COLUMNS expects them; no default, so the ALTER is instant.
ALTER TABLE relay.jobs
    ADD COLUMN workflow_run_id text,
    ADD COLUMN workflow_step text;

-- One row per run. `seq` orders runs (newest first in workflow_list, whose cursor it is); `steps` is
-- the run's graph in definition order: [[name, [depends_on...], allow_failure, job_id], ...]. The row
-- is also the run's lock: every transaction that changes a step because another ended or came back
-- locks it first (relay.storage.postgres.workflows explains the order).
CREATE TABLE relay.workflow_runs (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL,
    workflow text NOT NULL,
    policy text NOT NULL,
    params json NOT NULL,
    cancelled boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL,
    steps json NOT NULL,
    CONSTRAINT workflow_runs_id_key UNIQUE (id),
    CONSTRAINT workflow_runs_policy_check CHECK (policy IN ('stop', 'continue'))
);

-- workflow_list of one workflow, newest first.
CREATE INDEX workflow_runs_workflow ON relay.workflow_runs (workflow, seq);
