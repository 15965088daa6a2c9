-- Relay's PostgreSQL schema as it stands after every migration in migrations/ (the reference the
-- migration test compares against: tests/integration/test_postgres_migrations.py). Change the schema by
-- adding a numbered migration AND updating this file; the test fails until both agree.
--
-- Everything lives in the `relay` schema, so that Relay's tables sit beside an application's own tables
-- in one database (transactional enqueue needs that) without a name clash.
-- Times are timestamptz (microseconds, like Python's datetime). JSON values are `json`, not `jsonb`:
-- json keeps orjson's text as written (key order, and \u0000, which jsonb refuses and which a job's
-- stderr may well contain), and Relay never queries inside a payload except by substring.

CREATE SCHEMA relay;

-- A fresh job id, shaped like relay.types.new_job_id (UUIDv7: 48 bits of milliseconds, then random
-- bits), for chained jobs that the database inserts by itself (job_finish_many, job_reap_expired).
-- gen_random_uuid() is a v4 UUID whose variant bits sit where v7 wants them; only the first 12 hex
-- digits (the time) and the version digit change.
CREATE FUNCTION relay.new_job_id() RETURNS text
LANGUAGE sql VOLATILE
AS $$
    SELECT substr(ms, 1, 8) || '-' || substr(ms, 9, 4) || '-7' || substr(gen_random_uuid()::text, 16)
    FROM (SELECT lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') AS ms) AS t
$$;

-- One row per job. `seq` is the insertion order (claim tie-break, list cursor); `id` is the public id.
-- The column order is the order relay.storage.postgres.rows reads `SELECT *` / `RETURNING *` in.
-- fillfactor 90 leaves room on each page so that a heartbeat (which changes no indexed column) is a
-- HOT update: no new index entries, no index bloat from the most frequent write.
CREATE TABLE relay.jobs (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL,
    queue text NOT NULL,
    kind text NOT NULL,
    state text NOT NULL,
    priority integer NOT NULL,
    attempt integer NOT NULL,
    max_retries integer NOT NULL,
    backoff_kind text NOT NULL,
    backoff_base double precision NOT NULL,
    backoff_max double precision NOT NULL,
    timeout double precision,
    lease double precision NOT NULL,
    run_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    lease_token text,
    lease_expires_at timestamptz,
    worker_id text,
    cancel_requested boolean NOT NULL,
    progress double precision,
    idempotency_key text,
    parent_id text,
    payload json NOT NULL,
    on_success json,
    on_failure json,
    tags json NOT NULL,
    metadata json NOT NULL,
    checkpoint json,
    result json,
    errors json NOT NULL,
    CONSTRAINT jobs_id_key UNIQUE (id),
    CONSTRAINT jobs_state_check CHECK (
        state IN ('pending', 'scheduled', 'running', 'completed', 'failed', 'dead', 'cancelled')
    ),
    CONSTRAINT jobs_kind_check CHECK (kind IN ('task', 'shell', 'external'))
) WITH (fillfactor = 90);

-- Idempotency keys are unique among the jobs that have one (most have none: they stay out of it).
CREATE UNIQUE INDEX jobs_idempotency_key ON relay.jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- The claim walks this index per queue in claim order (priority DESC, run_at, seq) and stops after its
-- LIMIT. Partial, on pending jobs only: running and finished jobs cost the claim nothing, and neither do
-- jobs scheduled for later (they would otherwise sit in the walk whenever fewer jobs are due than the
-- claim wants, e.g. an idle worker facing 100,000 delayed jobs).
CREATE INDEX jobs_pending ON relay.jobs (queue, priority DESC, run_at, seq) WHERE state = 'pending';

-- Scheduled and failed jobs by run_at: the claim takes the due ones (run_at <= now, a range at the start
-- of this index) and the scheduler promotes them to pending. Jobs due later are never read.
CREATE INDEX jobs_due ON relay.jobs (run_at) WHERE state IN ('scheduled', 'failed');

-- The reaper reads running jobs only. lease_expires_at is deliberately not indexed: heartbeats change
-- it, and an index on it would make every heartbeat a non-HOT update. Running jobs are few (the fleet's
-- slots), so filtering them by lease is cheap.
CREATE INDEX jobs_running ON relay.jobs (seq) WHERE state = 'running';

-- Pruning finished jobs by age (finished_at is set only in final states).
CREATE INDEX jobs_finished ON relay.jobs (finished_at) WHERE finished_at IS NOT NULL;

-- What operators look for among the finished: the dead-letter queue, retries, cancellations (listed
-- newest first, requeued, purged). Partial, so the bulk of the table (completed jobs) stays out of it
-- and a job that completes on its first attempt never touches it.
CREATE INDEX jobs_unhappy ON relay.jobs (seq) WHERE state IN ('failed', 'dead', 'cancelled');

-- Output lines. `seq` is one sequence for all lines, so it increases per job in append order without a
-- max(seq) lookup per line nor a race between two appenders of one job.
CREATE TABLE relay.job_logs (
    job_id text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    attempt integer NOT NULL,
    stream text NOT NULL,
    text text NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- Every queue that ever held a job or was paused / resumed.
CREATE TABLE relay.queues (
    name text PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false
);

-- Worker processes.
CREATE TABLE relay.workers (
    id text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    queues text[] NOT NULL,
    concurrency integer NOT NULL,
    started_at timestamptz NOT NULL,
    last_heartbeat_at timestamptz NOT NULL,
    running text[] NOT NULL
);

-- One row per leadership name: who holds it, until when, from which database session (the leader
-- connection's random token), and whether that session held the name's advisory lock when it was
-- elected. When such a session dies, PostgreSQL drops its lock, and a contender that gets the lock may
-- take the row over at once instead of waiting for expires_at (relay.storage.postgres.leader).
CREATE TABLE relay.leaders (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires_at timestamptz NOT NULL,
    session text NOT NULL,
    locked boolean NOT NULL
);

-- Which migrations (file names without .sql) were applied, and when. The migrator creates this table
-- itself before reading it (queries.sql: migrations_table).
CREATE TABLE relay.schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL
);

-- The chained jobs (on_success / on_failure) of parents whose outcome is being recorded, inserted by
-- job_finish and job_reap_expired in the statement that records the outcome. `chains` is a JSON array
-- of {"parent": id, "chain": the stored NewJob.to_json()}, in the parents' order (their seq order is
-- the chained jobs' seq order). A chain whose id or idempotency key is taken was enqueued already: it
-- is skipped. Returns the queue and state of each job inserted.
CREATE FUNCTION relay.insert_chained(chains json, chained_at timestamptz)
RETURNS TABLE (queue text, state text)
LANGUAGE sql VOLATILE
AS $$
    INSERT INTO relay.jobs AS j (
        id, queue, kind, state, priority, attempt, max_retries, backoff_kind, backoff_base, backoff_max,
        timeout, lease, run_at, created_at, updated_at, cancel_requested, idempotency_key, parent_id,
        payload, on_success, on_failure, tags, metadata, checkpoint, errors
    )
    SELECT coalesce(e.c->>'id', relay.new_job_id()), e.c->>'queue', e.c->>'kind',
           CASE WHEN s.start > chained_at THEN 'scheduled' ELSE 'pending' END,
           (e.c->>'priority')::integer, 0, (e.c->>'max_retries')::integer, e.c->'backoff'->>'kind',
           (e.c->'backoff'->>'base')::double precision, (e.c->'backoff'->>'max')::double precision,
           (e.c->>'timeout')::double precision, (e.c->>'lease')::double precision, s.start, chained_at,
           chained_at, false, e.c->>'idempotency_key', e.parent, e.c->'payload',
           CASE WHEN json_typeof(e.c->'on_success') = 'null' THEN NULL ELSE e.c->'on_success' END,
           CASE WHEN json_typeof(e.c->'on_failure') = 'null' THEN NULL ELSE e.c->'on_failure' END,
           e.c->'tags', e.c->'metadata',
           CASE WHEN json_typeof(e.c->'checkpoint') = 'null' THEN NULL ELSE e.c->'checkpoint' END, '[]'
    FROM json_array_elements(chains) WITH ORDINALITY AS element(v, ord)
    CROSS JOIN LATERAL (SELECT element.v->>'parent' AS parent, element.v->'chain' AS c) AS e
    CROSS JOIN LATERAL (
        SELECT coalesce(
            (e.c->>'run_at')::timestamptz,
            chained_at + (e.c->>'delay')::double precision * interval '1 second'
        ) AS start
    ) AS s
    ORDER BY element.ord
    ON CONFLICT DO NOTHING
    RETURNING j.queue, j.state
$$;
