-- Relay's PostgreSQL queries, loaded once at import by relay.storage.sql_queries (one `-- name:` block
-- each). Same names as the SQLite backend's queries.sql where the operation is the same.
--
-- Conventions:
-- - Placeholders are psycopg's named ones (written <name> in these comments, since psycopg would also
--   read a placeholder inside a comment); a name used twice is one parameter. Comment lines are
--   stripped before the queries are sent (relay.storage.postgres.sql explains why).
-- - Time: every decision uses coalesce(<now>, now()). <now> is NULL in production, so leases and
--   schedules are judged by the database server's clock, one clock for the whole fleet (now() is the
--   start of the transaction). Tests inject a clock and pass its time instead.
-- - Batches are unnested in one statement: one round trip whatever the batch size. The hot path's
--   batches (insert, heartbeat, finish) come as one JSON array per column, zipped back into rows by
--   ROWS FROM: json_array_elements_text for SQL values (cast to their type), json_array_elements for JSON
--   values (their text kept as sent, \u0000 included; a JSON null is turned into SQL NULL by
--   json_typeof). json_to_recordset is not used: it refuses a \u0000 anywhere in its input.
-- - Rows that several writers may touch are locked in seq order (ORDER BY seq FOR UPDATE), or skipped
--   when locked (SKIP LOCKED), so that two batches never wait for each other in a cycle.
-- - Wake-ups: a statement that makes jobs claimable sends one NOTIFY on channel relay_jobs, whose
--   payload is the JSON array of their queues ('*' when too long for NOTIFY's 8000 bytes). It is sent
--   by an uncorrelated scalar subquery (evaluated once, and only if the statement returns a row) and
--   delivered at commit, so a rolled-back insert wakes nobody.
-- - Chained jobs (on_success / on_failure) are inserted by the statement that records the outcome,
--   from the NewJob JSON stored with the parent (relay.types.NewJob.to_json); ON CONFLICT DO NOTHING
--   skips a chain whose idempotency key or client id is already taken.

-- ---------------------------------------------------------------------------------------------------
-- connection and migrations

-- name: migrations_lock
-- Two processes starting at once on a new database: the second waits here, then sees the first's work.
SELECT pg_advisory_xact_lock(1380273217, 0)

-- name: schema_create
CREATE SCHEMA IF NOT EXISTS relay

-- name: migrations_table
CREATE TABLE IF NOT EXISTS relay.schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL
)

-- name: migrations_table_exists
SELECT to_regclass('relay.schema_migrations') IS NOT NULL

-- name: migrations_applied
SELECT name FROM relay.schema_migrations

-- name: migration_record
INSERT INTO relay.schema_migrations (name, applied_at) VALUES (%(name)s, coalesce(%(now)s::timestamptz, now()))

-- name: jobs_columns
SELECT column_name FROM information_schema.columns
WHERE table_schema = 'relay' AND table_name = 'jobs'
ORDER BY ordinal_position

-- ---------------------------------------------------------------------------------------------------
-- producer: insert

-- name: job_insert
-- One statement for the whole batch, in batch order (ord). Ids are chosen by the caller (client ids, or
-- fresh ones). Parameters: one JSON array per column (relay.storage.postgres.rows.insert_params).
-- A job whose idempotency key is taken is skipped here and looked up afterwards
-- (job_by_idempotency_keys: a later statement sees a key that a concurrent transaction committed while
-- this one waited for it). A taken client id raises unique_violation on jobs_id_key, which aborts the
-- whole statement: nothing of the batch is inserted.
-- The answer is one row, whatever the batch size: the time of the insert (created_at of every job),
-- the ids of the inserted jobs that had an idempotency key, and the id and run_at of every inserted
-- job that does not start at that time. The caller knows the rest: it sent it.
WITH clock AS MATERIALIZED (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
input AS (
    SELECT i.id, i.queue, i.kind, i.priority::integer AS priority,
           coalesce(i.run_at::timestamptz, clock.now + i.delay::double precision * interval '1 second')
               AS start,
           i.max_retries::integer AS max_retries, i.backoff_kind,
           i.backoff_base::double precision AS backoff_base,
           i.backoff_max::double precision AS backoff_max, i.timeout::double precision AS timeout,
           i.lease::double precision AS lease, i.idempotency_key, i.payload,
           CASE WHEN json_typeof(i.on_success) <> 'null' THEN i.on_success END AS on_success,
           CASE WHEN json_typeof(i.on_failure) <> 'null' THEN i.on_failure END AS on_failure,
           i.tags, i.metadata,
           CASE WHEN json_typeof(i.checkpoint) <> 'null' THEN i.checkpoint END AS checkpoint,
           i.ord, clock.now
    FROM clock, ROWS FROM (
        json_array_elements_text(%(id)s::json), json_array_elements_text(%(queue)s::json),
        json_array_elements_text(%(kind)s::json), json_array_elements_text(%(priority)s::json),
        json_array_elements_text(%(run_at)s::json), json_array_elements_text(%(delay)s::json),
        json_array_elements_text(%(max_retries)s::json), json_array_elements_text(%(backoff_kind)s::json),
        json_array_elements_text(%(backoff_base)s::json), json_array_elements_text(%(backoff_max)s::json),
        json_array_elements_text(%(timeout)s::json), json_array_elements_text(%(lease)s::json),
        json_array_elements_text(%(idempotency_key)s::json), json_array_elements(%(payload)s::json),
        json_array_elements(%(on_success)s::json), json_array_elements(%(on_failure)s::json),
        json_array_elements(%(tags)s::json), json_array_elements(%(metadata)s::json),
        json_array_elements(%(checkpoint)s::json)
    ) WITH ORDINALITY AS i(
        id, queue, kind, priority, run_at, delay, max_retries, backoff_kind, backoff_base, backoff_max,
        timeout, lease, idempotency_key, payload, on_success, on_failure, tags, metadata, checkpoint, ord
    )
),
inserted AS (
    INSERT INTO relay.jobs (
        id, queue, kind, state, priority, attempt, max_retries, backoff_kind, backoff_base, backoff_max,
        timeout, lease, run_at, created_at, updated_at, cancel_requested, idempotency_key, payload,
        on_success, on_failure, tags, metadata, checkpoint, errors
    )
    SELECT id, queue, kind, CASE WHEN start > now THEN 'scheduled' ELSE 'pending' END, priority, 0,
           max_retries, backoff_kind, backoff_base, backoff_max, timeout, lease, start, now, now, false,
           idempotency_key, payload, on_success, on_failure, tags, metadata, checkpoint, '[]'
    FROM input
    ORDER BY ord
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, queue, idempotency_key, run_at, created_at
),
queues AS (
    SELECT DISTINCT queue FROM inserted
),
registered AS (
    INSERT INTO relay.queues (name) SELECT queue FROM queues ON CONFLICT (name) DO NOTHING
)
SELECT (SELECT now FROM clock),
       array_agg(id) FILTER (WHERE idempotency_key IS NOT NULL),
       array_agg(id) FILTER (WHERE run_at <> created_at),
       array_agg(run_at) FILTER (WHERE run_at <> created_at),
       (
           SELECT pg_notify('relay_jobs', CASE WHEN length(q) < 8000 THEN q ELSE '*' END)
           FROM (SELECT json_agg(queue)::text AS q FROM queues) AS woken
           WHERE q IS NOT NULL
       )
FROM inserted

-- name: job_by_idempotency_keys
SELECT * FROM relay.jobs WHERE idempotency_key = ANY(%(keys)s::text[])

-- name: job_ids_taken
SELECT id FROM relay.jobs WHERE id = ANY(%(ids)s::text[])

-- name: savepoint
SAVEPOINT relay_insert

-- name: savepoint_release
RELEASE SAVEPOINT relay_insert

-- name: savepoint_rollback
ROLLBACK TO SAVEPOINT relay_insert

-- ---------------------------------------------------------------------------------------------------
-- worker: claim, heartbeat, finish, logs

-- name: job_claim
-- One statement picks, locks and marks the jobs. Candidates come from two places, each read through its
-- own partial index and each already in claim order:
-- - pending jobs, per wanted queue that is not paused (a LATERAL walk of jobs_pending per queue that
--   stops after <limit> rows: no sort of a queue's backlog, however long);
-- - scheduled / failed jobs whose run_at has come (the start of jobs_due; the scheduler keeps this
--   range short by promoting them to pending).
-- SKIP LOCKED: rows another claim is taking are passed over, never waited for. PostgreSQL locks below
-- the LIMIT, so skipped rows do not count. The two sets are merged, cut to <limit>, and updated.
-- The lease token is 32 hex digits of gen_random_uuid() (122 random bits), like new_lease_token().
WITH clock AS MATERIALIZED (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
open_queues AS (
    SELECT q.name FROM json_array_elements_text(%(queues)s::json) AS q(name)
    WHERE NOT EXISTS (SELECT 1 FROM relay.queues p WHERE p.name = q.name AND p.paused)
),
pending AS (
    SELECT c.seq, c.priority, c.run_at
    FROM open_queues AS o
    CROSS JOIN LATERAL (
        SELECT j.seq, j.priority, j.run_at FROM relay.jobs AS j
        WHERE j.queue = o.name
          AND j.state = 'pending'
          AND j.run_at <= (SELECT now FROM clock)
          AND j.kind = ANY(ARRAY(SELECT json_array_elements_text(%(kinds)s::json)))
        ORDER BY j.priority DESC, j.run_at, j.seq
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS c
),
due AS (
    SELECT j.seq, j.priority, j.run_at FROM relay.jobs AS j
    WHERE j.state IN ('scheduled', 'failed')
      AND j.run_at <= (SELECT now FROM clock)
      AND j.queue IN (SELECT name FROM open_queues)
      AND j.kind = ANY(ARRAY(SELECT json_array_elements_text(%(kinds)s::json)))
    ORDER BY j.priority DESC, j.run_at, j.seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
picked AS (
    SELECT seq FROM (SELECT * FROM pending UNION ALL SELECT * FROM due) AS candidates
    ORDER BY priority DESC, run_at, seq
    LIMIT %(limit)s
)
UPDATE relay.jobs AS j SET
    state = 'running',
    attempt = j.attempt + 1,
    lease_token = replace(gen_random_uuid()::text, '-', ''),
    lease_expires_at = clock.now + j.lease * interval '1 second',
    started_at = clock.now,
    worker_id = %(worker_id)s,
    updated_at = clock.now
FROM picked, clock
WHERE j.seq = picked.seq
RETURNING j.*

-- name: job_heartbeat
-- Fenced by lease token. Changes no indexed column, so it is a HOT update (see schema.sql).
WITH clock AS MATERIALIZED (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
fenced AS (
    SELECT j.seq, i.progress::double precision AS progress, i.save_checkpoint::boolean AS save_checkpoint,
           CASE WHEN json_typeof(i.checkpoint) <> 'null' THEN i.checkpoint END AS checkpoint
    FROM ROWS FROM (
        json_array_elements_text(%(id)s::json), json_array_elements_text(%(lease_token)s::json),
        json_array_elements_text(%(progress)s::json), json_array_elements_text(%(save_checkpoint)s::json),
        json_array_elements(%(checkpoint)s::json)
    ) AS i(id, lease_token, progress, save_checkpoint, checkpoint)
    JOIN relay.jobs AS j ON j.id = i.id
    WHERE j.lease_token = i.lease_token AND j.state = 'running'
    ORDER BY j.seq
    FOR UPDATE OF j
)
UPDATE relay.jobs AS j SET
    lease_expires_at = clock.now + j.lease * interval '1 second',
    progress = coalesce(f.progress, j.progress),
    checkpoint = CASE WHEN f.save_checkpoint THEN f.checkpoint ELSE j.checkpoint END
FROM fenced AS f, clock
WHERE j.seq = f.seq
RETURNING j.id, j.cancel_requested

-- name: job_finish
-- semantics.md rule 4 for a whole batch in one statement: fence (lease token, state running), decide the
-- new state from the outcome and the attempts left, record it, insert the chains of completed (on_success)
-- and dead (on_failure) jobs, and wake the queues that got a claimable job. Errors are appended to the
-- stored JSON array as text: `json` has no append operator, and jsonb cannot hold every stderr (\u0000).
WITH clock AS MATERIALIZED (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
fenced AS (
    SELECT j.seq,
           CASE WHEN json_typeof(i.result) <> 'null' THEN i.result END AS result,
           CASE WHEN json_typeof(i.error) <> 'null' THEN i.error END AS error,
           i.retry_delay::double precision AS retry_delay,
           CASE
               WHEN i.outcome = 'completed' THEN 'completed'
               -- asked to cancel: a failure or a release on its way out must not run it again
               WHEN i.outcome = 'cancelled' OR j.cancel_requested THEN 'cancelled'
               WHEN i.outcome = 'failed' THEN
                   CASE WHEN i.retryable::boolean AND j.attempt <= j.max_retries THEN 'failed' ELSE 'dead' END
               ELSE 'pending'
           END AS new_state
    FROM ROWS FROM (
        json_array_elements_text(%(id)s::json), json_array_elements_text(%(lease_token)s::json),
        json_array_elements_text(%(outcome)s::json), json_array_elements(%(result)s::json),
        json_array_elements(%(error)s::json), json_array_elements_text(%(retry_delay)s::json),
        json_array_elements_text(%(retryable)s::json)
    ) AS i(id, lease_token, outcome, result, error, retry_delay, retryable)
    JOIN relay.jobs AS j ON j.id = i.id
    WHERE j.lease_token = i.lease_token AND j.state = 'running'
    ORDER BY j.seq
    FOR UPDATE OF j
),
finished AS (
    UPDATE relay.jobs AS j SET
        state = f.new_state,
        result = CASE WHEN f.new_state = 'completed' THEN f.result ELSE j.result END,
        run_at = CASE WHEN f.new_state = 'failed'
                      THEN clock.now + f.retry_delay * interval '1 second' ELSE j.run_at END,
        finished_at = CASE WHEN f.new_state IN ('completed', 'dead', 'cancelled')
                           THEN clock.now ELSE j.finished_at END,
        attempt = CASE WHEN f.new_state = 'pending' THEN j.attempt - 1 ELSE j.attempt END,
        errors = CASE
            WHEN f.error IS NULL OR f.new_state IN ('completed', 'pending') THEN j.errors
            WHEN j.errors::text = '[]' THEN json_build_array(f.error)
            ELSE (left(j.errors::text, -1) || ',' || f.error::text || ']')::json
        END,
        lease_token = NULL,
        lease_expires_at = NULL,
        updated_at = clock.now
    FROM fenced AS f, clock
    WHERE j.seq = f.seq
    RETURNING j.seq, j.id, j.state, j.queue,
              CASE j.state WHEN 'completed' THEN j.on_success WHEN 'dead' THEN j.on_failure END AS chain
),
chained AS MATERIALIZED (
    SELECT c.queue, c.state FROM relay.insert_chained(
        (SELECT json_agg(json_build_object('parent', f.id, 'chain', f.chain) ORDER BY f.seq)
         FROM finished AS f WHERE f.chain IS NOT NULL),
        (SELECT now FROM clock)
    ) AS c
),
registered AS (
    INSERT INTO relay.queues (name) SELECT DISTINCT queue FROM chained ON CONFLICT (name) DO NOTHING
),
woken AS (
    SELECT queue FROM finished WHERE state = 'pending'
    UNION
    SELECT queue FROM chained WHERE state = 'pending'
)
SELECT f.id, f.state, (
    SELECT pg_notify('relay_jobs', CASE WHEN length(q) < 8000 THEN q ELSE '*' END)
    FROM (SELECT json_agg(queue)::text AS q FROM woken) AS w
    WHERE q IS NOT NULL
)
FROM finished AS f

-- name: job_log_append
-- Lines of a job that no longer exists (pruned meanwhile) are dropped rather than left orphaned.
-- ORDER BY ord: the identity seq is drawn in this order, so lines keep their append order.
INSERT INTO relay.job_logs (job_id, attempt, stream, text, at)
SELECT l.job_id, l.attempt, l.stream, l.text, coalesce(%(now)s::timestamptz, now())
FROM unnest(%(job_id)s::text[], %(attempt)s::integer[], %(stream)s::text[], %(text)s::text[])
     WITH ORDINALITY AS l(job_id, attempt, stream, text, ord)
WHERE EXISTS (SELECT 1 FROM relay.jobs AS j WHERE j.id = l.job_id)
ORDER BY l.ord

-- ---------------------------------------------------------------------------------------------------
-- maintenance

-- name: job_reap_expired
-- semantics.md rule 6 in one statement. SKIP LOCKED: a job being finished or heartbeated right now is
-- left for the next round (its worker is alive). The LeaseExpired error is shaped like
-- relay.types.AttemptError.to_json(); `at` is rendered by json_build_object in ISO 8601.
WITH clock AS MATERIALIZED (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
expired AS (
    SELECT j.seq FROM relay.jobs AS j
    WHERE j.state = 'running' AND j.lease_expires_at < (SELECT now FROM clock)
    ORDER BY j.seq
    FOR UPDATE SKIP LOCKED
),
reaped AS (
    UPDATE relay.jobs AS j SET
        state = CASE
            WHEN j.cancel_requested THEN 'cancelled'
            WHEN j.attempt <= j.max_retries THEN 'pending'
            ELSE 'dead'
        END,
        run_at = CASE WHEN NOT j.cancel_requested AND j.attempt <= j.max_retries
                      THEN clock.now ELSE j.run_at END,
        finished_at = CASE WHEN j.cancel_requested OR j.attempt > j.max_retries
                           THEN clock.now ELSE j.finished_at END,
        errors = (
            SELECT CASE WHEN j.errors::text = '[]' THEN json_build_array(e)
                        ELSE (left(j.errors::text, -1) || ',' || e::text || ']')::json END
            FROM json_build_object(
                'attempt', j.attempt, 'type', %(type)s::text, 'message', %(message)s::text,
                'at', clock.now, 'traceback', NULL, 'exit_code', NULL, 'stderr_tail', NULL
            ) AS e
        ),
        lease_token = NULL,
        lease_expires_at = NULL,
        updated_at = clock.now
    FROM expired, clock
    WHERE j.seq = expired.seq
    RETURNING j.seq, j.id, j.state, j.queue, CASE WHEN j.state = 'dead' THEN j.on_failure END AS chain
),
chained AS MATERIALIZED (
    SELECT c.queue, c.state FROM relay.insert_chained(
        (SELECT json_agg(json_build_object('parent', r.id, 'chain', r.chain) ORDER BY r.seq)
         FROM reaped AS r WHERE r.chain IS NOT NULL),
        (SELECT now FROM clock)
    ) AS c
),
registered AS (
    INSERT INTO relay.queues (name) SELECT DISTINCT queue FROM chained ON CONFLICT (name) DO NOTHING
),
woken AS (
    SELECT queue FROM reaped WHERE state = 'pending'
    UNION
    SELECT queue FROM chained WHERE state = 'pending'
)
SELECT r.id, r.state, (
    SELECT pg_notify('relay_jobs', CASE WHEN length(q) < 8000 THEN q ELSE '*' END)
    FROM (SELECT json_agg(queue)::text AS q FROM woken) AS w
    WHERE q IS NOT NULL
)
FROM reaped AS r
ORDER BY r.seq

-- name: job_promote_due
-- A range at the start of jobs_due, updated in place (no join whose plan could turn into a scan of the
-- table). A due job that a claim is taking right now is waited for (milliseconds: a claim is one
-- statement) and then skipped, since it is no longer scheduled or failed.
WITH promoted AS (
    UPDATE relay.jobs SET state = 'pending', updated_at = coalesce(%(now)s::timestamptz, now())
    WHERE state IN ('scheduled', 'failed') AND run_at <= coalesce(%(now)s::timestamptz, now())
    RETURNING queue
)
SELECT count(*), (
    SELECT pg_notify('relay_jobs', CASE WHEN length(q) < 8000 THEN q ELSE '*' END)
    FROM (SELECT json_agg(DISTINCT queue)::text AS q FROM promoted) AS w
    WHERE q IS NOT NULL
)
FROM promoted

-- name: job_prune
-- Oldest first through jobs_finished, at most <limit> jobs, with their logs, in one statement.
WITH doomed AS (
    SELECT j.seq FROM relay.jobs AS j
    WHERE j.finished_at < %(finished_before)s::timestamptz AND j.state = ANY(%(states)s::text[])
    ORDER BY j.finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
gone AS (
    DELETE FROM relay.jobs AS j USING doomed WHERE j.seq = doomed.seq RETURNING j.id
),
logs AS (
    DELETE FROM relay.job_logs WHERE job_id IN (SELECT id FROM gone)
)
SELECT count(*) FROM gone

-- name: leader_try_lock
-- A session-level advisory lock per leadership name: held by the leader's connection as long as it
-- lives, released by PostgreSQL itself when that connection dies.
SELECT pg_try_advisory_lock(1380273218, hashtext(%(name)s))

-- name: leader_unlock
SELECT pg_advisory_unlock(1380273218, hashtext(%(name)s))

-- name: leader_elect
-- Inserted, or taken over when the term lapsed (expires_at <= now), or renewed by its holder, or taken
-- over from a holder whose session held the advisory lock and lost it: <locked> says this session
-- holds the lock now, so the row's session cannot any more (it died, or gave it up). A holder that
-- took the row by a lapse without the lock (the old leader stalled, its connection alive) is only ever
-- taken over by a lapse. When the DO UPDATE's WHERE is false nothing is written and nothing returned:
-- not elected.
INSERT INTO relay.leaders AS l (name, holder, expires_at, session, locked)
VALUES (
    %(name)s, %(holder)s,
    coalesce(%(now)s::timestamptz, now()) + %(ttl)s * interval '1 second',
    %(session)s, %(locked)s
)
ON CONFLICT (name) DO UPDATE SET
    holder = excluded.holder, expires_at = excluded.expires_at, session = excluded.session,
    locked = excluded.locked
WHERE l.expires_at <= coalesce(%(now)s::timestamptz, now())
   OR l.holder = excluded.holder
   OR (excluded.locked AND l.locked AND l.session <> excluded.session)
RETURNING holder

-- name: leader_session
-- Whether this session's lock still backs a leadership (of another holder in this process).
SELECT count(*) > 0 FROM relay.leaders WHERE name = %(name)s AND session = %(session)s

-- name: leader_resign
DELETE FROM relay.leaders WHERE name = %(name)s AND holder = %(holder)s

-- ---------------------------------------------------------------------------------------------------
-- operators: jobs

-- name: job_get
SELECT * FROM relay.jobs WHERE id = %(id)s

-- name: job_list
-- Newest first from below the cursor (<before_seq>): a backward walk of the primary key that stops
-- after <limit> matches (the caller asks one more row than a page, to know if another follows).
-- A NULL filter is off. Text: case-insensitive substring (lower() follows the database's LC_CTYPE) of
-- the id, of a tag, or of the payload's JSON text as written.
SELECT * FROM relay.jobs AS j
WHERE j.seq < %(before_seq)s
  AND (%(states)s::text[] IS NULL OR j.state = ANY(%(states)s::text[]))
  AND (%(queues)s::text[] IS NULL OR j.queue = ANY(%(queues)s::text[]))
  AND (%(kinds)s::text[] IS NULL OR j.kind = ANY(%(kinds)s::text[]))
  AND (
    %(text)s::text IS NULL
    OR strpos(lower(j.id), lower(%(text)s::text)) > 0
    OR strpos(lower(j.payload::text), lower(%(text)s::text)) > 0
    OR EXISTS (
        SELECT 1 FROM json_array_elements_text(j.tags) AS t(tag)
        WHERE strpos(lower(t.tag), lower(%(text)s::text)) > 0
    )
  )
ORDER BY j.seq DESC
LIMIT %(limit)s

-- name: job_state
SELECT state FROM relay.jobs WHERE id = %(id)s

-- name: job_cancel
-- A waiting job is cancelled at once; a running one is flagged (its worker learns at its next
-- heartbeat). Final jobs are not touched: no row comes back, and the caller reports why.
UPDATE relay.jobs SET
    state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END,
    finished_at = CASE WHEN state = 'running' THEN finished_at ELSE coalesce(%(now)s::timestamptz, now()) END,
    cancel_requested = cancel_requested OR state = 'running',
    updated_at = coalesce(%(now)s::timestamptz, now())
WHERE id = %(id)s AND state IN ('pending', 'scheduled', 'failed', 'running')
RETURNING *

-- name: job_requeue_one
UPDATE relay.jobs SET
    state = 'pending', run_at = coalesce(%(now)s::timestamptz, now()), finished_at = NULL,
    cancel_requested = false, lease_token = NULL, lease_expires_at = NULL,
    updated_at = coalesce(%(now)s::timestamptz, now())
WHERE id = %(id)s AND state IN ('dead', 'failed', 'cancelled')
RETURNING *, (SELECT pg_notify('relay_jobs', json_build_array(queue)::text))

-- name: job_requeue_many
WITH doomed AS (
    SELECT j.seq FROM relay.jobs AS j
    WHERE j.state = ANY(%(states)s::text[]) AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
    ORDER BY j.seq
    FOR UPDATE
),
requeued AS (
    UPDATE relay.jobs AS j SET
        state = 'pending', run_at = coalesce(%(now)s::timestamptz, now()), finished_at = NULL,
        cancel_requested = false, lease_token = NULL, lease_expires_at = NULL,
        updated_at = coalesce(%(now)s::timestamptz, now())
    FROM doomed
    WHERE j.seq = doomed.seq
    RETURNING j.*
)
SELECT requeued.*, (
    SELECT pg_notify('relay_jobs', CASE WHEN length(q) < 8000 THEN q ELSE '*' END)
    FROM (SELECT json_agg(DISTINCT queue)::text AS q FROM requeued) AS w
    WHERE q IS NOT NULL
)
FROM requeued
ORDER BY requeued.seq

-- name: job_purge
WITH gone AS (
    DELETE FROM relay.jobs
    WHERE state = ANY(%(states)s::text[]) AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
    RETURNING id
),
logs AS (
    DELETE FROM relay.job_logs WHERE job_id IN (SELECT id FROM gone)
)
SELECT count(*) FROM gone

-- name: job_logs
SELECT job_id, seq, attempt, stream, text, at FROM relay.job_logs
WHERE job_id = %(job_id)s
  AND (%(attempt)s::integer IS NULL OR attempt = %(attempt)s::integer)
  AND seq > %(after_seq)s
ORDER BY seq
LIMIT %(limit)s

-- ---------------------------------------------------------------------------------------------------
-- operators: queues and workers

-- name: queue_list
-- Every known queue with its counts by state and its oldest pending job, in one scan of the jobs.
SELECT q.name, q.paused, c.state, c.n, c.oldest_pending
FROM relay.queues AS q
LEFT JOIN (
    SELECT queue, state, count(*) AS n, min(run_at) FILTER (WHERE state = 'pending') AS oldest_pending
    FROM relay.jobs
    GROUP BY queue, state
) AS c ON c.queue = q.name
ORDER BY q.name

-- name: queue_set_paused
-- Resuming wakes the queue's workers: its waiting jobs may be claimed again.
INSERT INTO relay.queues AS q (name, paused) VALUES (%(name)s, %(paused)s)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused
RETURNING CASE WHEN NOT q.paused THEN pg_notify('relay_jobs', json_build_array(q.name)::text) END

-- name: worker_upsert
INSERT INTO relay.workers (id, host, pid, queues, concurrency, started_at, last_heartbeat_at, running)
VALUES (
    %(id)s, %(host)s, %(pid)s, %(queues)s::text[], %(concurrency)s, %(started_at)s, %(last_heartbeat_at)s,
    %(running)s::text[]
)
ON CONFLICT (id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, queues = excluded.queues,
    concurrency = excluded.concurrency, started_at = excluded.started_at,
    last_heartbeat_at = excluded.last_heartbeat_at, running = excluded.running

-- name: worker_list
SELECT id, host, pid, queues, concurrency, started_at, last_heartbeat_at, running
FROM relay.workers ORDER BY id

-- name: worker_remove
DELETE FROM relay.workers WHERE id = %(id)s

-- ---------------------------------------------------------------------------------------------------
-- wake-ups

-- name: listen
LISTEN relay_jobs

-- name: notify
SELECT pg_notify('relay_jobs', %(payload)s)

-- name: ping
SELECT 1
