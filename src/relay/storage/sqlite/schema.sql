-- Relay's SQLite schema as it stands after every migration in migrations/ (the reference the
-- migration test compares against: tests/integration/test_sqlite_migrations.py). Change the schema by
-- adding a numbered migration AND updating this file; the test fails until both agree.
--
-- Times are INTEGER microseconds since the Unix epoch (exact, and they index and compare as integers).
-- JSON values are TEXT written by orjson. Tables are STRICT, so a wrongly typed bind fails loudly.

-- One row per job. `seq` is the insertion order (claim tie-break, list cursor); `id` is the public id.
-- The column order is the order relay.storage.sqlite.rows reads `SELECT *` / `RETURNING *` in.
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    max_retries INTEGER NOT NULL,
    backoff_kind TEXT NOT NULL,
    backoff_base REAL NOT NULL,
    backoff_max REAL NOT NULL,
    timeout REAL,
    lease REAL NOT NULL,
    run_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    lease_token TEXT,
    lease_expires_at INTEGER,
    worker_id TEXT,
    cancel_requested INTEGER NOT NULL,
    progress REAL,
    idempotency_key TEXT UNIQUE,
    parent_id TEXT,
    payload TEXT NOT NULL,
    on_success TEXT,
    on_failure TEXT,
    tags TEXT NOT NULL,
    metadata TEXT NOT NULL,
    checkpoint TEXT,
    result TEXT,
    errors TEXT NOT NULL
    -- Flow control (migration 0002). ALTER TABLE ADD COLUMN wrote them this way, hence the layout.
    -- `held`: 1 while the job waits behind an earlier job of its (queue, ordering_key); never claimed.
    -- `unique_until`: when the idempotency key stops holding (NULL: never); `unique_while`: 'stored' or
    -- 'active' (relay.types.UniqueWhile). `dead_blocks`: 1 for a dead job that keeps its ordering key
    -- held (it died while its queue's ordering_dead was 'block').
    -- Workflows (migration 0003): `workflow_run_id` the run a job is a step of (workflow_runs.id) and
    -- `workflow_step` the step's name; both NULL for a job outside a workflow.
, rate_key TEXT, concurrency_key TEXT, ordering_key TEXT, held INTEGER NOT NULL DEFAULT 0,
    unique_until INTEGER, unique_while TEXT NOT NULL DEFAULT 'stored',
    dead_blocks INTEGER NOT NULL DEFAULT 0, workflow_run_id TEXT, workflow_step TEXT) STRICT;

-- The claim walks this index per queue in claim order (priority DESC, run_at, then rowid = seq, which
-- every index ends with) and stops after LIMIT rows. It is partial, on pending jobs only: the claim
-- first turns its queues' due scheduled / failed jobs into pending ones (queries.sql: job_claim), so
-- no job whose run_at is still to come sits in the walk, and running or finished jobs cost nothing
-- here, nor do held jobs (behind an earlier job of their ordering key). The claim queries repeat this
-- WHERE verbatim: SQLite only uses a partial index then.
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at) WHERE state = 'pending' AND held = 0;

-- Ordering keys: per (queue, ordering_key), its unheld jobs then its held ones, each by seq. Completed
-- and cancelled jobs never hold nor block a key, so a key's history stays out: "has this key an unheld
-- blocking job" reads its few live unheld rows, and "its first held job" is the first row of the held
-- range (relay.storage.sqlite.ordering).
CREATE INDEX jobs_ordering ON jobs (queue, ordering_key, held, seq)
WHERE ordering_key IS NOT NULL AND state NOT IN ('completed', 'cancelled');

-- Promotion of due scheduled / failed jobs: pending jobs (the bulk) stay out of it.
CREATE INDEX jobs_due ON jobs (state, run_at) WHERE state IN ('scheduled', 'failed');

-- The reaper: only running jobs, ordered by lease expiry.
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'running';

-- Counts by queue and state, the oldest pending job of a queue, list / requeue / purge by queue.
CREATE INDEX jobs_queue_state ON jobs (queue, state, run_at);

-- Pruning finished jobs by age.
CREATE INDEX jobs_finished ON jobs (state, finished_at) WHERE finished_at IS NOT NULL;

-- Output lines, numbered per job (`seq` 1, 2, ...) in append order.
CREATE TABLE job_logs (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    stream TEXT NOT NULL,
    text TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (job_id, seq)
) STRICT, WITHOUT ROWID;

-- Every queue that ever held a job, was paused / resumed or given limits. The limits (migration 0002,
-- relay.types.QueueLimits) are NULL for "no limit": rate / burst the queue's bucket, key_rate /
-- key_burst each rate_key's, concurrency / key_concurrency the running jobs at once; ordering_dead is
-- 'continue' or 'block'.
CREATE TABLE queues (
    name TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0
, rate REAL, burst INTEGER, key_rate REAL, key_burst INTEGER, concurrency INTEGER,
    key_concurrency INTEGER, ordering_dead TEXT NOT NULL DEFAULT 'continue') STRICT;

-- Token buckets, one per queue with a rate (scope 'queue', key '') and per rate_key of a queue with a
-- key_rate (scope 'key', key the rate_key): what it held (`tokens`) at time `at`. A bucket never
-- stored is full; rate_buckets_prune deletes those full again (relay.storage.sqlite.flow).
CREATE TABLE rate_buckets (
    queue TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    tokens REAL NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (queue, scope, key)
) STRICT, WITHOUT ROWID;

-- Periodic jobs (relay.types.Schedule): `job` is the template as NewJob.to_json() JSON, `catch_up` a
-- relay.types.CatchUp value; next_run_at NULL when the spec has no more ticks.
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    timezone TEXT NOT NULL,
    job TEXT NOT NULL,
    catch_up TEXT NOT NULL,
    paused INTEGER NOT NULL,
    next_run_at INTEGER,
    last_run_at INTEGER,
    last_job_id TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- schedule_due: the unpaused schedules by next tick.
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE paused = 0 AND next_run_at IS NOT NULL;

-- Workflow runs (migration 0003, relay.storage.sqlite.workflows). `seq` orders runs (newest first in
-- workflow_list, whose cursor it is); `policy` a relay.types.FailurePolicy value; `params` JSON;
-- `cancelled` 1 once an operator cancelled the run; `steps` the run's graph as JSON, in definition
-- order: [[name, [depends_on...], allow_failure, job_id], ...]. A step's state is its job's.
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

-- Worker processes; `queues` and `running` are JSON arrays of strings.
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    queues TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL,
    running TEXT NOT NULL
) STRICT;

-- One row per leadership name: who holds it, and until when.
CREATE TABLE leaders (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

-- Which migrations (file names without .sql) were applied, and when (microseconds since the epoch).
-- The migrator creates this table itself before reading it (queries.sql: migrations_table).
CREATE TABLE schema_migrations (
    name TEXT PRIMARY KEY,
    applied_at INTEGER NOT NULL
) STRICT;
