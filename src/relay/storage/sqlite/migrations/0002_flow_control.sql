-- Flow control (issue 12): rate and concurrency limits, ordering keys, unique windows, schedules.
-- Applied by relay.storage.sqlite.migrate inside one BEGIN IMMEDIATE transaction, statement by statement.
--
-- ALTER TABLE appends the new columns at the end of `jobs`, which is where JOB_COLUMNS
-- (relay.storage.sql_rows) expects them. Every one has a default a job without flow control keeps, so
-- the existing inserts (job_insert, job_insert_plain) bind no more values than before.

ALTER TABLE jobs ADD COLUMN rate_key TEXT;
ALTER TABLE jobs ADD COLUMN concurrency_key TEXT;
ALTER TABLE jobs ADD COLUMN ordering_key TEXT;
ALTER TABLE jobs ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN unique_until INTEGER;
ALTER TABLE jobs ADD COLUMN unique_while TEXT NOT NULL DEFAULT 'stored';
-- 1 for a dead job that keeps its ordering key held: it died while its queue's ordering_dead was
-- 'block' (decided when it dies; a later change of the setting leaves it).
ALTER TABLE jobs ADD COLUMN dead_blocks INTEGER NOT NULL DEFAULT 0;

-- The claim's index leaves held jobs out (the claim repeats this WHERE verbatim).
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at) WHERE state = 'pending' AND held = 0;

-- The jobs of an ordering key that may still hold or block it, held ones apart, each group by seq.
CREATE INDEX jobs_ordering ON jobs (queue, ordering_key, held, seq)
WHERE ordering_key IS NOT NULL AND state NOT IN ('completed', 'cancelled');

-- A queue's limits (relay.types.QueueLimits); NULL is "no limit".
ALTER TABLE queues ADD COLUMN rate REAL;
ALTER TABLE queues ADD COLUMN burst INTEGER;
ALTER TABLE queues ADD COLUMN key_rate REAL;
ALTER TABLE queues ADD COLUMN key_burst INTEGER;
ALTER TABLE queues ADD COLUMN concurrency INTEGER;
ALTER TABLE queues ADD COLUMN key_concurrency INTEGER;
ALTER TABLE queues ADD COLUMN ordering_dead TEXT NOT NULL DEFAULT 'continue';

-- Token buckets drawn from: what each held (`tokens`) at time `at`.
CREATE TABLE rate_buckets (
    queue TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    tokens REAL NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (queue, scope, key)
) STRICT, WITHOUT ROWID;

-- Periodic jobs.
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

CREATE INDEX schedules_due ON schedules (next_run_at) WHERE paused = 0 AND next_run_at IS NOT NULL;
