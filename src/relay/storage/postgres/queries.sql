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
-- fresh ones). Parameters: one JSON array per column (relay.storage.postgres.rows.insert_params); the
-- flow-control columns are empty arrays ('[]': ROWS FROM pads them with NULLs) in a batch that uses none.
-- A job whose idempotency key is taken is skipped here and looked up afterwards
-- (job_by_idempotency_keys: a later statement sees a key that a concurrent transaction committed while
-- this one waited for it). A taken client id raises unique_violation on jobs_id_key, which aborts the
-- whole statement: nothing of the batch is inserted.
-- Unique windows: when a key of <keys> belongs to a job whose hold lapsed (lapsed), nothing is inserted
-- and the answer names those keys; the caller then clears them (job_release_keys) and runs this again,
-- in one transaction (relay.storage.postgres.inserts). Batches without keys never meet it.
-- Ordering keys: a job with one is inserted held, then relay.release_next, called once the insert is
-- done (the aggregate below has read all of it), releases the first held job of each key that has no
-- unheld blocking job, under that key's lock: in one statement, and one round trip. <ordering> (the
-- batch's [queue, ordering_key] pairs) is NULL in a batch without ordering keys: no call at all.
-- The answer is one row, whatever the batch size: the time of the insert (created_at of every job),
-- the ids of the inserted jobs that had an idempotency key, the id and run_at of every inserted job
-- that does not start at that time, the lapsed keys, and the held jobs released. The caller knows the
-- rest: it sent it. (float8 is double precision: a shorter name, to keep under psycopg's cache limit.)
WITH clock AS MATERIALIZED (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
input AS (
    SELECT i.id, i.queue, i.kind, i.priority::integer AS priority,
           coalesce(i.run_at::timestamptz, clock.now + i.delay::float8 * interval '1 second')
               AS start,
           i.max_retries::integer AS max_retries, i.backoff_kind,
           i.backoff_base::float8 AS backoff_base,
           i.backoff_max::float8 AS backoff_max, i.timeout::float8 AS timeout,
           i.lease::float8 AS lease, i.idempotency_key, i.payload,
           CASE WHEN json_typeof(i.on_success) <> 'null' THEN i.on_success END AS on_success,
           CASE WHEN json_typeof(i.on_failure) <> 'null' THEN i.on_failure END AS on_failure,
           i.tags, i.metadata,
           CASE WHEN json_typeof(i.checkpoint) <> 'null' THEN i.checkpoint END AS checkpoint,
           i.rate_key, i.concurrency_key, i.ordering_key,
           clock.now + i.unique_for::float8 * interval '1 second' AS unique_until,
           coalesce(i.unique_while, 'stored') AS unique_while, i.ord, clock.now
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
        json_array_elements(%(checkpoint)s::json), json_array_elements_text(%(rate_key)s::json),
        json_array_elements_text(%(concurrency_key)s::json),
        json_array_elements_text(%(ordering_key)s::json), json_array_elements_text(%(unique_for)s::json),
        json_array_elements_text(%(unique_while)s::json)
    ) WITH ORDINALITY AS i(
        id, queue, kind, priority, run_at, delay, max_retries, backoff_kind, backoff_base, backoff_max,
        timeout, lease, idempotency_key, payload, on_success, on_failure, tags, metadata, checkpoint,
        rate_key, concurrency_key, ordering_key, unique_for, unique_while, ord
    )
),
lapsed AS MATERIALIZED (
    SELECT key FROM relay.lapsed_keys(%(keys)s::json, (SELECT now FROM clock)) AS key
),
inserted AS (
    INSERT INTO relay.jobs (
        id, queue, kind, state, priority, attempt, max_retries, backoff_kind, backoff_base, backoff_max,
        timeout, lease, run_at, created_at, updated_at, cancel_requested, idempotency_key, payload,
        on_success, on_failure, tags, metadata, checkpoint, errors, rate_key, concurrency_key,
        ordering_key, held, unique_until, unique_while
    )
    SELECT id, queue, kind, CASE WHEN start > now THEN 'scheduled' ELSE 'pending' END, priority, 0,
           max_retries, backoff_kind, backoff_base, backoff_max, timeout, lease, start, now, now, false,
           idempotency_key, payload, on_success, on_failure, tags, metadata, checkpoint, '[]', rate_key,
           concurrency_key, ordering_key, ordering_key IS NOT NULL, unique_until, unique_while
    FROM input
    WHERE NOT EXISTS (SELECT 1 FROM lapsed)
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
       (SELECT array_agg(key) FROM lapsed),
       (
           SELECT array_agg(r.released_id) FROM relay.release_next(%(ordering)s::json) AS r
           WHERE %(ordering)s::text IS NOT NULL
       ),
       (
           SELECT pg_notify('relay_jobs', CASE WHEN length(q) < 8000 THEN q ELSE '*' END)
           FROM (SELECT json_agg(queue)::text AS q FROM queues) AS woken
           WHERE q IS NOT NULL
       )
FROM inserted

-- name: job_release_keys
-- Unique windows: the jobs whose hold on these keys lapsed give them up, in the transaction that then
-- inserts the new jobs (job_insert again). The row locks serialise two inserts taking over one key:
-- the second waits here, finds the key cleared already (and changes nothing), and its insert then meets
-- the first one's job on the key, which it returns.
UPDATE relay.jobs SET idempotency_key = NULL
WHERE idempotency_key = ANY(%(keys)s::text[])
  AND (unique_until <= coalesce(%(now)s::timestamptz, now())
       OR (unique_while = 'active' AND state IN ('completed', 'dead', 'cancelled')))

-- name: job_by_idempotency_keys
SELECT * FROM relay.jobs WHERE idempotency_key = ANY(%(keys)s::text[])

-- name: job_ids_taken
SELECT id FROM relay.jobs WHERE id = ANY(%(ids)s::text[])

-- name: transaction_isolation
-- The isolation of the caller's transaction (transactional enqueue checks it for ordering keys).
SHOW transaction_isolation

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
-- Held jobs are in neither index. SKIP LOCKED: rows another claim is taking are passed over, never
-- waited for. PostgreSQL locks below the LIMIT, so skipped rows do not count. The two sets are merged,
-- cut to <limit>, and updated.
-- Flow control: when a wanted queue (not paused) is limited, this claims nothing (every open queue is
-- left out) and says so in the last column; the caller then claims through relay.claim_limited
-- (job_claim_limited), which takes every wanted queue in one claim order. The answer always has a row:
-- with nothing claimed, a row of NULL job columns carries that flag.
-- The lease token is 32 hex digits of gen_random_uuid() (122 random bits), like new_lease_token().
WITH clock AS MATERIALIZED (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
named AS MATERIALIZED (
    SELECT q.name, coalesce(p.paused, false) AS paused, coalesce(p.limited AND NOT p.paused, false) AS limited
    FROM json_array_elements_text(%(queues)s::json) AS q(name)
    LEFT JOIN relay.queues AS p ON p.name = q.name
),
open_queues AS (
    SELECT name FROM named WHERE NOT paused AND NOT EXISTS (SELECT 1 FROM named WHERE limited)
),
pending AS (
    SELECT c.seq, c.priority, c.run_at
    FROM open_queues AS o
    CROSS JOIN LATERAL (
        SELECT j.seq, j.priority, j.run_at FROM relay.jobs AS j
        WHERE j.queue = o.name
          AND j.state = 'pending'
          AND NOT j.held
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
      AND NOT j.held
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
),
claimed AS (
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
)
SELECT c.*, l.limited
FROM (SELECT bool_or(limited) AS limited FROM named) AS l
LEFT JOIN claimed AS c ON true

-- name: job_claim_limited
-- The claim of a list of queues of which one at least is limited: relay.claim_limited (schema.sql says
-- how it keeps every limit across processes). Its rows: the jobs claimed, then one with the job
-- columns NULL and the claim's retry_after and whether a limited queue was named.
SELECT (c.claimed_job).*, c.claim_retry_after, c.claim_limited
FROM relay.claim_limited(
    %(queues)s::json, %(kinds)s::json, %(limit)s::integer, %(worker_id)s::text, %(now)s::timestamptz,
    %(max_passed)s::integer
) AS c

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
-- and dead (on_failure) jobs, release the next held job of the ordering keys whose job ended (both in
-- relay.insert_chained, a no-op call for jobs with neither), and wake the queues that got a claimable
-- job, or a free slot (queues with a concurrency limit: every job here leaves running). Errors are appended to the
-- stored JSON array as text: `json` has no append operator, and jsonb cannot hold every stderr (\u0000).
-- Workflow steps: with <steps> false (the hot path), a fenced step is not finished but answered with
-- state 'step' and its run (the last two columns: run id, and for a finished step its name); the
-- caller then finishes those with <steps> true in a transaction that first locked their runs
-- (relay.storage.postgres.workflows), so that the run's other steps change with the outcome.
WITH clock AS MATERIALIZED (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
fenced AS (
    SELECT j.seq, j.id,
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
           END AS new_state,
           j.workflow_run_id AS run_id
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
        dead_blocks = f.new_state = 'dead' AND j.ordering_key IS NOT NULL AND EXISTS (
            SELECT 1 FROM relay.queues AS q WHERE q.name = j.queue AND q.ordering_dead = 'block'
        ),
        updated_at = clock.now
    FROM fenced AS f, clock
    WHERE j.seq = f.seq AND (f.run_id IS NOT NULL) = %(steps)s::boolean
    RETURNING j.seq, j.id, j.state, j.queue, j.ordering_key,
              CASE j.state WHEN 'completed' THEN j.on_success WHEN 'dead' THEN j.on_failure END AS chain,
              j.workflow_step
),
chained AS MATERIALIZED (
    SELECT c.chained_queue AS queue, c.chained_state AS state FROM relay.insert_chained(
        (SELECT json_agg(json_build_object('parent', f.id, 'chain', f.chain) ORDER BY f.seq)
         FROM finished AS f WHERE f.chain IS NOT NULL),
        (SELECT json_agg(json_build_array(f.queue, f.ordering_key)) FROM finished AS f
         WHERE f.ordering_key IS NOT NULL AND f.state IN ('completed', 'dead', 'cancelled')),
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
    UNION
    SELECT q.name FROM relay.queues AS q
    WHERE (q.concurrency IS NOT NULL OR q.key_concurrency IS NOT NULL) AND q.name IN (SELECT queue FROM finished)
)
SELECT f.id, coalesce(u.state, 'step'), (
    SELECT pg_notify('relay_jobs', CASE WHEN length(q) < 8000 THEN q ELSE '*' END)
    FROM (SELECT json_agg(queue)::text AS q FROM woken) AS w
    WHERE q IS NOT NULL
), f.run_id, u.workflow_step
FROM fenced AS f LEFT JOIN finished AS u ON u.seq = f.seq

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
-- semantics.md rule 6 in one statement, with the chains and ordering keys of the jobs that end and the
-- wake-ups of freed slots, as in job_finish. SKIP LOCKED: a job being finished or heartbeated right now is
-- left for the next round (its worker is alive). The LeaseExpired error is shaped like
-- relay.types.AttemptError.to_json(); `at` is rendered by json_build_object in ISO 8601.
-- <runs>: NULL reaps the expired jobs outside workflow runs; else only the steps of those runs, which
-- the caller locked first (relay.storage.postgres.maintenance reaps steps that way, after the rest).
WITH clock AS MATERIALIZED (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
expired AS (
    SELECT j.seq FROM relay.jobs AS j
    WHERE j.state = 'running' AND j.lease_expires_at < (SELECT now FROM clock)
      AND CASE WHEN %(runs)s::text[] IS NULL THEN j.workflow_run_id IS NULL
               ELSE j.workflow_run_id = ANY(%(runs)s::text[]) END
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
        dead_blocks = NOT j.cancel_requested AND j.attempt > j.max_retries AND j.ordering_key IS NOT NULL
            AND EXISTS (SELECT 1 FROM relay.queues AS q WHERE q.name = j.queue AND q.ordering_dead = 'block'),
        updated_at = clock.now
    FROM expired, clock
    WHERE j.seq = expired.seq
    RETURNING j.seq, j.id, j.state, j.queue, j.ordering_key,
              CASE WHEN j.state = 'dead' THEN j.on_failure END AS chain, j.workflow_run_id, j.workflow_step
),
chained AS MATERIALIZED (
    SELECT c.chained_queue AS queue, c.chained_state AS state FROM relay.insert_chained(
        (SELECT json_agg(json_build_object('parent', r.id, 'chain', r.chain) ORDER BY r.seq)
         FROM reaped AS r WHERE r.chain IS NOT NULL),
        (SELECT json_agg(json_build_array(r.queue, r.ordering_key)) FROM reaped AS r
         WHERE r.ordering_key IS NOT NULL AND r.state IN ('dead', 'cancelled')),
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
    UNION
    SELECT q.name FROM relay.queues AS q
    WHERE (q.concurrency IS NOT NULL OR q.key_concurrency IS NOT NULL) AND q.name IN (SELECT queue FROM reaped)
)
SELECT r.id, r.state, (
    SELECT pg_notify('relay_jobs', CASE WHEN length(q) < 8000 THEN q ELSE '*' END)
    FROM (SELECT json_agg(queue)::text AS q FROM woken) AS w
    WHERE q IS NOT NULL
), r.workflow_run_id, r.workflow_step
FROM reaped AS r
ORDER BY r.seq

-- name: job_promote_due
-- A range at the start of jobs_due, updated in place (no join whose plan could turn into a scan of the
-- table). A due job that a claim is taking right now is waited for (milliseconds: a claim is one
-- statement) and then skipped, since it is no longer scheduled or failed. Held jobs stay as they are
-- (they are not in jobs_due); once released, the claim or the next promotion takes them.
WITH promoted AS (
    UPDATE relay.jobs SET state = 'pending', updated_at = coalesce(%(now)s::timestamptz, now())
    WHERE state IN ('scheduled', 'failed') AND NOT held AND run_at <= coalesce(%(now)s::timestamptz, now())
    RETURNING queue
)
SELECT count(*), (
    SELECT pg_notify('relay_jobs', CASE WHEN length(q) < 8000 THEN q ELSE '*' END)
    FROM (SELECT json_agg(DISTINCT queue)::text AS q FROM promoted) AS w
    WHERE q IS NOT NULL
)
FROM promoted

-- name: job_prune
-- Oldest first through jobs_finished, at most <limit> jobs, with their logs, in one statement. A dead
-- job pruned may have held its ordering key (ordering_dead = block): relay.release_next, called once
-- the delete is done (after the aggregate), releases the next job of such keys and wakes its queue.
WITH doomed AS (
    SELECT j.seq FROM relay.jobs AS j
    WHERE j.finished_at < %(finished_before)s::timestamptz AND j.state = ANY(%(states)s::text[])
    ORDER BY j.finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
gone AS (
    DELETE FROM relay.jobs AS j USING doomed WHERE j.seq = doomed.seq RETURNING j.id, j.queue, j.ordering_key
),
logs AS (
    DELETE FROM relay.job_logs WHERE job_id IN (SELECT id FROM gone)
)
SELECT count(*), (
    SELECT pg_notify('relay_jobs', json_agg(DISTINCT r.released_queue)::text)
    FROM relay.release_next(
        (SELECT json_agg(json_build_array(queue, ordering_key)) FROM gone WHERE ordering_key IS NOT NULL)
    ) AS r
    HAVING count(*) > 0
)
FROM gone

-- name: rate_buckets_prune
-- A bucket full again (tokens + refill >= burst: the same as no row) or whose limit is gone. A claim
-- drawing from a bucket at this moment either updated it first (the delete re-checks the new row and
-- keeps it) or finds it deleted and inserts it again (its upsert), from the same full value.
DELETE FROM relay.rate_buckets AS b
WHERE NOT EXISTS (
    SELECT 1 FROM relay.queues AS q
    WHERE q.name = b.queue
      AND CASE WHEN b.rate_key IS NULL
               THEN b.tokens + greatest(0, extract(epoch FROM coalesce(%(now)s::timestamptz, now()) - b.at)::double precision) * q.rate < q.rate_burst
               ELSE b.tokens + greatest(0, extract(epoch FROM coalesce(%(now)s::timestamptz, now()) - b.at)::double precision) * q.key_rate < q.key_rate_burst
          END
)

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
-- heartbeat). Final jobs are not touched: no row comes back, and the caller reports why. A cancelled
-- held job stops being held; a cancelled head of an ordering key lets the next job of its key go
-- (relay.release_next, after the update: the scalar subquery runs once its row is out). The last
-- column: the ids of the jobs released.
WITH cancelled AS (
    UPDATE relay.jobs SET
        state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END,
        finished_at = CASE WHEN state = 'running' THEN finished_at ELSE coalesce(%(now)s::timestamptz, now()) END,
        cancel_requested = cancel_requested OR state = 'running',
        held = held AND state = 'running',
        updated_at = coalesce(%(now)s::timestamptz, now())
    WHERE id = %(id)s AND state IN ('pending', 'scheduled', 'failed', 'running')
    RETURNING *
),
released AS MATERIALIZED (
    SELECT r.released_id, r.released_queue FROM relay.release_next(
        (SELECT json_agg(json_build_array(queue, ordering_key)) FROM cancelled
         WHERE ordering_key IS NOT NULL AND state = 'cancelled')
    ) AS r
)
SELECT cancelled.*, (
    SELECT array_agg(released_id) FROM (
        SELECT released_id, pg_notify('relay_jobs', json_build_array(released_queue)::text) FROM released
    ) AS n
)
FROM cancelled

-- name: job_requeue_one
-- Back to pending, due now. Ordering keys: a job that did not block its key before (cancelled, or dead
-- without dead_blocks) goes back in line held, and relay.release_next (after the
-- update) releases it if its key has no other unheld blocking job: it then runs at once, else after
-- the job its key is on. A failed job, or a dead one that blocked its key, keeps its place. The last
-- column: the ids of the jobs released.
WITH requeued AS (
    UPDATE relay.jobs AS j SET
        state = 'pending', run_at = coalesce(%(now)s::timestamptz, now()), finished_at = NULL,
        cancel_requested = false, lease_token = NULL, lease_expires_at = NULL,
        held = j.ordering_key IS NOT NULL AND j.state <> 'failed' AND NOT (j.state = 'dead' AND j.dead_blocks),
        dead_blocks = false,
        updated_at = coalesce(%(now)s::timestamptz, now())
    WHERE j.id = %(id)s AND j.state IN ('dead', 'failed', 'cancelled')
    RETURNING j.*
),
released AS MATERIALIZED (
    SELECT r.released_id FROM relay.release_next(
        (SELECT json_agg(json_build_array(queue, ordering_key)) FROM requeued WHERE held)
    ) AS r
)
SELECT requeued.*, (SELECT array_agg(released_id) FROM released),
       pg_notify('relay_jobs', json_build_array(queue)::text)
FROM requeued

-- name: job_requeue_many
-- As job_requeue_one, for every job in <states> (and <queue>), by seq.
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
        held = j.ordering_key IS NOT NULL AND j.state <> 'failed' AND NOT (j.state = 'dead' AND j.dead_blocks),
        dead_blocks = false,
        updated_at = coalesce(%(now)s::timestamptz, now())
    FROM doomed
    WHERE j.seq = doomed.seq
    RETURNING j.*
),
released AS MATERIALIZED (
    SELECT r.released_id FROM relay.release_next(
        (SELECT json_agg(json_build_array(queue, ordering_key)) FROM requeued WHERE held)
    ) AS r
)
SELECT requeued.*, (SELECT array_agg(released_id) FROM released), (
    SELECT pg_notify('relay_jobs', CASE WHEN length(q) < 8000 THEN q ELSE '*' END)
    FROM (SELECT json_agg(DISTINCT queue)::text AS q FROM requeued) AS w
    WHERE q IS NOT NULL
)
FROM requeued
ORDER BY requeued.seq

-- name: job_purge
-- Deleting the job an ordering key is on (a dead one that blocks it, or any other) lets the key's next
-- job go: relay.release_next once the delete is done (after the aggregate), which wakes its queue.
WITH gone AS (
    DELETE FROM relay.jobs
    WHERE state = ANY(%(states)s::text[]) AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
    RETURNING id, queue, ordering_key
),
logs AS (
    DELETE FROM relay.job_logs WHERE job_id IN (SELECT id FROM gone)
)
SELECT count(*), (
    SELECT pg_notify('relay_jobs', json_agg(DISTINCT r.released_queue)::text)
    FROM relay.release_next(
        (SELECT json_agg(json_build_array(queue, ordering_key)) FROM gone WHERE ordering_key IS NOT NULL)
    ) AS r
    HAVING count(*) > 0
)
FROM gone

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
-- Every known queue with its counts by state and its oldest pending job (held ones count as pending, but
-- are not the oldest: they cannot run yet), in one scan of the jobs; with
-- its limits, its queue-wide bucket as stored, and the time to refill that bucket to (the caller does
-- the token maths of relay.storage.flow_control).
SELECT q.name, q.paused, c.state, c.n, c.oldest_pending,
       q.rate, q.rate_burst, q.key_rate, q.key_rate_burst, q.concurrency, q.key_concurrency,
       q.ordering_dead, b.tokens, b.at, coalesce(%(now)s::timestamptz, now())
FROM relay.queues AS q
LEFT JOIN (
    SELECT queue, state, count(*) AS n, min(run_at) FILTER (WHERE state = 'pending' AND NOT held) AS oldest_pending
    FROM relay.jobs
    GROUP BY queue, state
) AS c ON c.queue = q.name
LEFT JOIN relay.rate_buckets AS b ON b.queue = q.name AND b.rate_key IS NULL
ORDER BY q.name

-- name: queue_set_paused
-- Resuming wakes the queue's workers: its waiting jobs may be claimed again.
INSERT INTO relay.queues AS q (name, paused) VALUES (%(name)s, %(paused)s)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused
RETURNING CASE WHEN NOT q.paused THEN pg_notify('relay_jobs', json_build_array(q.name)::text) END

-- name: queue_limits_set
-- Registers the queue if it is new, and wakes its workers (looser limits may let waiting jobs through).
-- The update waits for a claim of the queue that holds its row (relay.claim_limited), so a claim sees
-- either the old limits or the new ones. Buckets are not touched: a claim refills a bucket with the
-- rate in force and cuts it to the burst in force whenever it reads one, which is the cut to a smaller
-- burst (relay.storage.base) done lazily, with the same result.
INSERT INTO relay.queues AS q (
    name, rate, rate_burst, key_rate, key_rate_burst, concurrency, key_concurrency, ordering_dead
)
VALUES (
    %(name)s, %(rate)s, %(rate_burst)s, %(key_rate)s, %(key_rate_burst)s, %(concurrency)s,
    %(key_concurrency)s, %(ordering_dead)s
)
ON CONFLICT (name) DO UPDATE SET
    rate = excluded.rate, rate_burst = excluded.rate_burst, key_rate = excluded.key_rate,
    key_rate_burst = excluded.key_rate_burst, concurrency = excluded.concurrency,
    key_concurrency = excluded.key_concurrency, ordering_dead = excluded.ordering_dead
RETURNING pg_notify('relay_jobs', json_build_array(q.name)::text)

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
-- schedules (relay.storage.postgres.schedules)

-- name: schedule_upsert
-- A redefinition keeps paused, the last run and created_at, and its next run unless the spec or the
-- timezone changed (relay.storage.params.ScheduleParams).
INSERT INTO relay.schedules AS s (
    name, spec, timezone, job, catch_up, paused, next_run_at, last_run_at, last_job_id, created_at,
    updated_at
)
VALUES (
    %(name)s, %(spec)s, %(timezone)s, %(job)s::json, %(catch_up)s, false, %(next_run_at)s::timestamptz,
    NULL, NULL, coalesce(%(now)s::timestamptz, now()), coalesce(%(now)s::timestamptz, now())
)
ON CONFLICT (name) DO UPDATE SET
    spec = excluded.spec, timezone = excluded.timezone, job = excluded.job, catch_up = excluded.catch_up,
    next_run_at = CASE WHEN s.spec = excluded.spec AND s.timezone = excluded.timezone
                       THEN s.next_run_at ELSE excluded.next_run_at END,
    updated_at = excluded.updated_at
RETURNING s.*

-- name: schedule_get
SELECT * FROM relay.schedules WHERE name = %(name)s

-- name: schedule_list
SELECT * FROM relay.schedules ORDER BY name

-- name: schedule_remove
DELETE FROM relay.schedules WHERE name = %(name)s RETURNING name

-- name: schedule_set_paused
-- Resuming sets the next run (ticks missed while paused are not run).
UPDATE relay.schedules SET
    paused = %(paused)s,
    next_run_at = CASE WHEN %(paused)s THEN next_run_at ELSE %(next_run_at)s::timestamptz END,
    updated_at = coalesce(%(now)s::timestamptz, now())
WHERE name = %(name)s
RETURNING *

-- name: schedule_due
-- The storage's now, then the due schedules through schedules_due (one row with NULLs when none is due).
SELECT c.now, s.*
FROM (SELECT coalesce(%(now)s::timestamptz, now()) AS now) AS c
LEFT JOIN LATERAL (
    SELECT * FROM relay.schedules AS d
    WHERE NOT d.paused AND d.next_run_at <= c.now
    ORDER BY d.next_run_at, d.name
    LIMIT %(limit)s
) AS s ON true
ORDER BY s.next_run_at, s.name

-- name: schedule_fire_claim
-- The compare-and-set of schedule_fire, first in its transaction: of nodes firing one tick at once, the
-- second waits for the first's row lock, then finds next_run_at moved and changes nothing.
UPDATE relay.schedules SET
    next_run_at = %(next_run_at)s::timestamptz, updated_at = coalesce(%(now)s::timestamptz, now())
WHERE name = %(name)s AND NOT paused AND next_run_at = %(expected_next)s::timestamptz
RETURNING name

-- name: schedule_fire_record
UPDATE relay.schedules SET last_run_at = %(tick)s::timestamptz, last_job_id = %(job_id)s
WHERE name = %(name)s

-- ---------------------------------------------------------------------------------------------------
-- wake-ups

-- name: listen
LISTEN relay_jobs

-- name: notify
SELECT pg_notify('relay_jobs', %(payload)s)

-- name: ping
SELECT 1

-- ---------------------------------------------------------------------------------------------------
-- workflow runs (relay.storage.postgres.workflows)
--
-- A run's steps are read and changed by their job ids (the run's `steps` graph holds them), each a
-- probe of jobs_id_key: no index on jobs.workflow_run_id, so that jobs outside workflows pay for none.
-- Lock order: a transaction that changes steps because another ended or came back locks the runs'
-- rows first (workflow_runs_lock, by id), then the steps' jobs.

-- name: workflow_steps_insert
-- A run's steps: job_insert without idempotency or ordering keys (a step has neither), each with its
-- run, its name and whether it waits for the steps it depends on (<held>).
WITH clock AS MATERIALIZED (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
inserted AS (
    INSERT INTO relay.jobs (
        id, queue, kind, state, priority, attempt, max_retries, backoff_kind, backoff_base, backoff_max,
        timeout, lease, run_at, created_at, updated_at, cancel_requested, payload, on_success, on_failure,
        tags, metadata, checkpoint, errors, rate_key, concurrency_key, held, workflow_run_id,
        workflow_step
    )
    SELECT i.id, i.queue, i.kind, CASE WHEN s.start > clock.now THEN 'scheduled' ELSE 'pending' END,
           i.priority::integer, 0, i.max_retries::integer, i.backoff_kind, i.backoff_base::float8,
           i.backoff_max::float8, i.timeout::float8, i.lease::float8, s.start, clock.now, clock.now,
           false, i.payload,
           CASE WHEN json_typeof(i.on_success) <> 'null' THEN i.on_success END,
           CASE WHEN json_typeof(i.on_failure) <> 'null' THEN i.on_failure END,
           i.tags, i.metadata, CASE WHEN json_typeof(i.checkpoint) <> 'null' THEN i.checkpoint END, '[]',
           i.rate_key, i.concurrency_key, i.held::boolean, i.run_id, i.step
    FROM clock, ROWS FROM (
        json_array_elements_text(%(id)s::json), json_array_elements_text(%(queue)s::json),
        json_array_elements_text(%(kind)s::json), json_array_elements_text(%(priority)s::json),
        json_array_elements_text(%(run_at)s::json), json_array_elements_text(%(delay)s::json),
        json_array_elements_text(%(max_retries)s::json), json_array_elements_text(%(backoff_kind)s::json),
        json_array_elements_text(%(backoff_base)s::json), json_array_elements_text(%(backoff_max)s::json),
        json_array_elements_text(%(timeout)s::json), json_array_elements_text(%(lease)s::json),
        json_array_elements(%(payload)s::json), json_array_elements(%(on_success)s::json),
        json_array_elements(%(on_failure)s::json), json_array_elements(%(tags)s::json),
        json_array_elements(%(metadata)s::json), json_array_elements(%(checkpoint)s::json),
        json_array_elements_text(%(rate_key)s::json), json_array_elements_text(%(concurrency_key)s::json),
        json_array_elements_text(%(held)s::json), json_array_elements_text(%(run_id)s::json),
        json_array_elements_text(%(step)s::json)
    ) WITH ORDINALITY AS i(
        id, queue, kind, priority, run_at, delay, max_retries, backoff_kind, backoff_base, backoff_max,
        timeout, lease, payload, on_success, on_failure, tags, metadata, checkpoint, rate_key,
        concurrency_key, held, run_id, step, ord
    )
    CROSS JOIN LATERAL (
        SELECT coalesce(i.run_at::timestamptz, clock.now + i.delay::float8 * interval '1 second') AS start
    ) AS s
    ORDER BY i.ord
    RETURNING *
),
registered AS (
    INSERT INTO relay.queues (name) SELECT DISTINCT queue FROM inserted ON CONFLICT (name) DO NOTHING
)
SELECT * FROM inserted

-- name: workflow_run_insert
INSERT INTO relay.workflow_runs (id, workflow, policy, params, cancelled, created_at, steps)
VALUES (%(id)s, %(workflow)s, %(policy)s, %(params)s::json, false, %(created_at)s, %(steps)s::json)
RETURNING seq

-- name: workflow_run_get
SELECT seq, id, workflow, policy, params, cancelled, created_at, steps FROM relay.workflow_runs
WHERE id = %(id)s

-- name: workflow_runs_lock
-- The runs' rows, locked by id (every caller in the same order: no two wait for each other in a cycle).
SELECT seq, id, workflow, policy, params, cancelled, created_at, steps FROM relay.workflow_runs
WHERE id = ANY(%(ids)s::text[])
ORDER BY id
FOR UPDATE

-- name: workflow_run_list
-- Newest first from below the cursor (<before_seq>), of one workflow or all (<workflow> NULL); the
-- caller asks one more row than a page.
SELECT seq, id, workflow, policy, params, cancelled, created_at, steps FROM relay.workflow_runs
WHERE seq < %(before_seq)s AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s::text)
ORDER BY seq DESC
LIMIT %(limit)s

-- name: workflow_run_set_cancelled
UPDATE relay.workflow_runs SET cancelled = %(cancelled)s WHERE id = %(id)s

-- name: workflow_steps_now
-- What the rules decide on (relay.storage.workflow_rules.StepNow), and each step's queue (to wake).
SELECT id, state, held, queue FROM relay.jobs WHERE id = ANY(%(ids)s::text[])

-- name: workflow_steps_read
-- What a run shows of its steps (relay.types.WorkflowStep).
SELECT id, state, held, attempt, result, started_at, finished_at FROM relay.jobs
WHERE id = ANY(%(ids)s::text[])

-- name: workflow_steps_release
-- Steps whose dependencies all succeeded: claimable once due (updated_at stays, as for ordering keys).
UPDATE relay.jobs SET held = false WHERE id = ANY(%(ids)s::text[]) AND held

-- name: workflow_steps_cancel
-- Waiting steps that can no longer run (a failure elsewhere), or every waiting step of a cancelled run:
-- cancelled as job_cancel cancels a waiting job.
UPDATE relay.jobs SET
    state = 'cancelled', held = false, finished_at = coalesce(%(now)s::timestamptz, now()),
    updated_at = coalesce(%(now)s::timestamptz, now())
WHERE id = ANY(%(ids)s::text[]) AND state IN ('pending', 'scheduled', 'failed')

-- name: workflow_steps_cancel_running
-- The running steps of a cancelled run are asked to stop, as job_cancel asks a running job.
UPDATE relay.jobs SET cancel_requested = true, updated_at = coalesce(%(now)s::timestamptz, now())
WHERE id = ANY(%(ids)s::text[]) AND state = 'running'

-- name: workflow_step_revive
-- Steps the retry of another brings back (those its failure cancelled), as job_requeue_one would, each
-- held while a step it depends on has not succeeded; for a step the requeue itself moved, its held flag.
UPDATE relay.jobs AS j SET
    state = 'pending', run_at = coalesce(%(now)s::timestamptz, now()), finished_at = NULL,
    cancel_requested = false, dead_blocks = false, lease_token = NULL, lease_expires_at = NULL,
    held = r.held::boolean, updated_at = coalesce(%(now)s::timestamptz, now())
FROM ROWS FROM (
    json_array_elements_text(%(id)s::json), json_array_elements_text(%(held)s::json)
) AS r(id, held)
WHERE j.id = r.id

-- name: workflow_steps_expired
-- The runs of the steps whose lease expired (job_reap_expired reaps them after locking these).
SELECT DISTINCT workflow_run_id FROM relay.jobs
WHERE state = 'running' AND workflow_run_id IS NOT NULL
  AND lease_expires_at < coalesce(%(now)s::timestamptz, now())

-- name: job_workflow_lookup
-- Before a cancel or requeue: the run and the state of each job of <ids> that is a workflow's step
-- (the caller locks the runs, then changes the jobs).
SELECT id, state, workflow_run_id, workflow_step FROM relay.jobs
WHERE id = ANY(%(ids)s::text[]) AND workflow_run_id IS NOT NULL
ORDER BY seq

-- name: job_workflow_lookup_states
-- job_workflow_lookup for the jobs job_requeue_many moves (<states>, <queue>), by seq.
SELECT id, state, workflow_run_id, workflow_step FROM relay.jobs
WHERE state = ANY(%(states)s::text[]) AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND workflow_run_id IS NOT NULL
ORDER BY seq
