-- Relay's SQLite queries, loaded once at import by relay.storage.sql_queries (one `-- name:` block each).
--
-- Conventions:
-- - Times are INTEGER microseconds since the epoch; :now is the backend clock's time, read once per
--   transaction, after its write lock was taken.
-- - A list parameter is bound as one JSON array and read with json_each(), so every query stays a
--   fixed text (no placeholders built at run time).
-- - relay_new_lease_token() and relay_icontains() are Python functions the connection registers
--   (relay.storage.sqlite.connection): relay.types.new_lease_token, and a Unicode case-insensitive
--   substring test.
-- - Every write runs inside BEGIN IMMEDIATE (relay.storage.sqlite.connection), so a read followed by
--   a write in one transaction sees no other writer in between.

-- ---------------------------------------------------------------------------------------------------
-- connection and migrations

-- name: pragma_wal
PRAGMA journal_mode = WAL

-- name: pragma_synchronous
PRAGMA synchronous = NORMAL

-- name: begin_write
BEGIN IMMEDIATE

-- name: begin_read
BEGIN

-- name: commit
COMMIT

-- name: rollback
ROLLBACK

-- name: migrations_table_exists
SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'

-- name: migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    name TEXT PRIMARY KEY,
    applied_at INTEGER NOT NULL
) STRICT

-- name: migrations_applied
SELECT name FROM schema_migrations

-- name: migration_record
INSERT INTO schema_migrations (name, applied_at) VALUES (:name, :now)

-- name: jobs_columns
SELECT name FROM pragma_table_info('jobs') ORDER BY cid

-- ---------------------------------------------------------------------------------------------------
-- producer: insert

-- name: job_insert
-- Positional: bound with the 21-tuple of relay.storage.sqlite.rows.new_job. seq is assigned (the next
-- rowid); the columns every new job has the same value in are constants, and those a new job leaves
-- NULL are left out: a bulk insert's SQLite time is mostly binding values (33 values against 21: 93
-- against 69 ms per 10,000 jobs). ?13 is created_at and updated_at both.
INSERT INTO jobs (
    id, queue, kind, state, priority, max_retries, backoff_kind, backoff_base, backoff_max, timeout,
    lease, run_at, created_at, updated_at, idempotency_key, parent_id, payload, on_success, on_failure,
    tags, metadata, checkpoint, attempt, cancel_requested, errors
) VALUES (
    ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
    ?11, ?12, ?13, ?13, ?14, ?15, ?16, ?17, ?18,
    ?19, ?20, ?21, 0, 0, '[]'
)

-- name: job_insert_plain
-- job_insert for the usual job, whose timeout, idempotency key, parent, chains and checkpoint are all
-- NULL: bound with the 15-tuple of relay.storage.sqlite.rows.new_job. Python's sqlite3 binds a None
-- through its adapter lookup (two failed attribute lookups, each an exception raised and cleared), so
-- writing those NULLs here instead costs a third less (69 against 48 ms per 10,000 jobs).
INSERT INTO jobs (
    id, queue, kind, state, priority, max_retries, backoff_kind, backoff_base, backoff_max, timeout,
    lease, run_at, created_at, updated_at, idempotency_key, parent_id, payload, on_success, on_failure,
    tags, metadata, checkpoint, attempt, cancel_requested, errors
) VALUES (
    ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL,
    ?10, ?11, ?12, ?12, NULL, NULL, ?13, NULL, NULL,
    ?14, ?15, NULL, 0, 0, '[]'
)

-- name: job_ids_taken
SELECT id FROM jobs WHERE id IN (SELECT value FROM json_each(:ids))

-- name: job_by_idempotency_keys
SELECT * FROM jobs WHERE idempotency_key IN (SELECT value FROM json_each(:keys))

-- name: queue_register
INSERT INTO queues (name) VALUES (?) ON CONFLICT (name) DO NOTHING

-- ---------------------------------------------------------------------------------------------------
-- worker: claim, heartbeat, finish, logs

-- name: job_claim_promote
-- The first statement of a claim, in its transaction: the due scheduled / failed jobs of the claimed
-- queues become pending (what job_promote_due does for every queue), so the claim below picks from
-- pending jobs alone. Otherwise each claim would walk past every job scheduled for later at the same
-- priority (measured: ~18 ms a claim with 100,000 delayed jobs). A range seek in jobs_queue_state.
UPDATE jobs SET state = 'pending', updated_at = :now
WHERE queue IN (SELECT value FROM json_each(:queues))
  AND state IN ('scheduled', 'failed')
  AND run_at <= :now

-- name: job_claim
-- One statement picks and marks the jobs. For each wanted queue that is not paused, the inner subquery
-- walks the partial index jobs_claim in claim order and stops after :limit rows (its state term is the
-- index's own WHERE, verbatim); the outer query merges the queues' candidates and keeps :limit.
-- INDEXED BY: without statistics the planner prefers jobs_queue_state (it also bounds run_at), which
-- then sorts every pending job of the queue on each claim.
-- RETURNING gives no order: the caller sorts the rows by (priority DESC, run_at, seq).
UPDATE jobs SET
    state = 'running',
    attempt = attempt + 1,
    lease_token = relay_new_lease_token(),
    lease_expires_at = :now + CAST(round(lease * 1000000) AS INTEGER),
    started_at = :now,
    worker_id = :worker_id,
    updated_at = :now
WHERE seq IN (
    SELECT j.seq
    FROM json_each(:queues) AS q
    JOIN jobs AS j ON j.seq IN (
        SELECT w.seq FROM jobs AS w INDEXED BY jobs_claim
        WHERE w.queue = q.value
          AND w.state = 'pending'
          AND w.run_at <= :now
          AND w.kind IN (SELECT value FROM json_each(:kinds))
        ORDER BY w.priority DESC, w.run_at, w.seq
        LIMIT :limit
    )
    WHERE q.value NOT IN (SELECT name FROM queues WHERE paused = 1)
    ORDER BY j.priority DESC, j.run_at, j.seq
    LIMIT :limit
)
RETURNING *

-- name: job_running_fence
-- What heartbeat and finish decide on: the running jobs among :ids, with their lease tokens.
SELECT id, lease_token, cancel_requested, attempt, max_retries, queue, on_success, on_failure
FROM jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'running'

-- name: job_heartbeat
-- Fenced again in the WHERE clause, although the caller checked under the same write lock.
UPDATE jobs SET
    lease_expires_at = :now + CAST(round(lease * 1000000) AS INTEGER),
    progress = coalesce(:progress, progress),
    checkpoint = CASE WHEN :save_checkpoint THEN :checkpoint ELSE checkpoint END
WHERE id = :id AND lease_token = :lease_token AND state = 'running'

-- name: job_finish
-- One statement for every outcome; the caller computed the new state (semantics.md rule 4).
-- :run_at / :finished_at NULL keep the stored value; :error NULL records no error.
UPDATE jobs SET
    state = :state,
    result = CASE WHEN :state = 'completed' THEN :result ELSE result END,
    run_at = coalesce(:run_at, run_at),
    finished_at = coalesce(:finished_at, finished_at),
    attempt = attempt - :give_back,
    errors = CASE WHEN :error IS NULL THEN errors ELSE json_insert(errors, '$[#]', json(:error)) END,
    lease_token = NULL,
    lease_expires_at = NULL,
    updated_at = :now
WHERE id = :id AND lease_token = :lease_token AND state = 'running'

-- name: job_log_append
-- Lines are numbered per job: 1 + the job's highest seq so far (a primary-key lookup). Lines of a job
-- that no longer exists (pruned meanwhile) are dropped rather than left orphaned.
INSERT INTO job_logs (job_id, seq, attempt, stream, text, at)
SELECT :job_id, coalesce((SELECT max(seq) FROM job_logs WHERE job_id = :job_id), 0) + 1,
       :attempt, :stream, :text, :now
WHERE EXISTS (SELECT 1 FROM jobs WHERE id = :job_id)

-- ---------------------------------------------------------------------------------------------------
-- maintenance

-- name: job_reap_expired
-- semantics.md rule 6 in one statement: the LeaseExpired error is appended as a JSON object shaped
-- like relay.types.AttemptError.to_json().
UPDATE jobs SET
    state = CASE
        WHEN cancel_requested THEN 'cancelled'
        WHEN attempt <= max_retries THEN 'pending'
        ELSE 'dead'
    END,
    run_at = CASE WHEN NOT cancel_requested AND attempt <= max_retries THEN :now ELSE run_at END,
    finished_at = CASE WHEN cancel_requested OR attempt > max_retries THEN :now ELSE finished_at END,
    errors = json_insert(errors, '$[#]', json_object(
        'attempt', attempt, 'type', :type, 'message', :message, 'at', :at,
        'traceback', NULL, 'exit_code', NULL, 'stderr_tail', NULL
    )),
    lease_token = NULL,
    lease_expires_at = NULL,
    updated_at = :now
WHERE state = 'running' AND lease_expires_at < :now
RETURNING seq, id, state, queue, on_failure

-- name: job_promote_due
UPDATE jobs SET state = 'pending', updated_at = :now
WHERE state IN ('scheduled', 'failed') AND run_at <= :now
RETURNING queue

-- name: job_prune
-- Without an ORDER BY, so that no sort of every old job runs under the write lock: jobs_finished
-- yields each state's jobs oldest first, which is the order that matters when :limit cuts.
DELETE FROM jobs WHERE seq IN (
    SELECT seq FROM jobs
    WHERE finished_at IS NOT NULL
      AND finished_at < :finished_before
      AND state IN (SELECT value FROM json_each(:states))
    LIMIT :limit
)
RETURNING id

-- name: job_logs_delete
DELETE FROM job_logs WHERE job_id IN (SELECT value FROM json_each(:ids))

-- name: leader_elect
-- Inserted, or taken over when the term lapsed (expires_at <= now) or renewed by its holder; when the
-- DO UPDATE's WHERE is false nothing is written and nothing returned: not elected.
INSERT INTO leaders (name, holder, expires_at) VALUES (:name, :holder, :expires_at)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE leaders.expires_at <= :now OR leaders.holder = excluded.holder
RETURNING holder

-- name: leader_resign
DELETE FROM leaders WHERE name = :name AND holder = :holder

-- ---------------------------------------------------------------------------------------------------
-- operators: jobs

-- name: job_get
SELECT * FROM jobs WHERE id = :id

-- name: job_list
-- Newest first from below the cursor (:before_seq); a NULL filter is off. Walks seq downwards and
-- stops after :limit matches (the caller asks one more row than a page, to know if another follows).
SELECT * FROM jobs
WHERE seq < :before_seq
  AND (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
  AND (:queues IS NULL OR queue IN (SELECT value FROM json_each(:queues)))
  AND (:kinds IS NULL OR kind IN (SELECT value FROM json_each(:kinds)))
  AND (
    :text IS NULL
    OR relay_icontains(id, :text)
    OR relay_icontains(payload, :text)
    OR EXISTS (SELECT 1 FROM json_each(jobs.tags) WHERE relay_icontains(value, :text))
  )
ORDER BY seq DESC
LIMIT :limit

-- name: job_state
SELECT state FROM jobs WHERE id = :id

-- name: job_cancel_waiting
UPDATE jobs SET state = 'cancelled', finished_at = :now, updated_at = :now
WHERE id = :id
RETURNING *

-- name: job_cancel_running
UPDATE jobs SET cancel_requested = 1, updated_at = :now
WHERE id = :id
RETURNING *

-- name: job_requeue_one
UPDATE jobs SET
    state = 'pending', run_at = :now, finished_at = NULL, cancel_requested = 0,
    lease_token = NULL, lease_expires_at = NULL, updated_at = :now
WHERE id = :id
RETURNING *

-- name: job_requeue_many
UPDATE jobs SET
    state = 'pending', run_at = :now, finished_at = NULL, cancel_requested = 0,
    lease_token = NULL, lease_expires_at = NULL, updated_at = :now
WHERE state IN (SELECT value FROM json_each(:states)) AND (:queue IS NULL OR queue = :queue)
RETURNING *

-- name: job_purge_logs
DELETE FROM job_logs WHERE job_id IN (
    SELECT id FROM jobs
    WHERE state IN (SELECT value FROM json_each(:states)) AND (:queue IS NULL OR queue = :queue)
)

-- name: job_purge
DELETE FROM jobs
WHERE state IN (SELECT value FROM json_each(:states)) AND (:queue IS NULL OR queue = :queue)

-- name: job_logs
SELECT job_id, seq, attempt, stream, text, at FROM job_logs
WHERE job_id = :job_id AND (:attempt IS NULL OR attempt = :attempt) AND seq > :after_seq
ORDER BY seq
LIMIT :limit

-- ---------------------------------------------------------------------------------------------------
-- operators: queues and workers

-- name: queue_names
-- The oldest pending job of each queue is one seek in jobs_queue_state (queue, state, run_at).
SELECT name, paused, (SELECT min(run_at) FROM jobs WHERE queue = queues.name AND state = 'pending')
FROM queues
ORDER BY name

-- name: queue_counts
SELECT queue, state, count(*) FROM jobs GROUP BY queue, state

-- name: queue_set_paused
INSERT INTO queues (name, paused) VALUES (:name, :paused)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused

-- name: worker_upsert
INSERT INTO workers (id, host, pid, queues, concurrency, started_at, last_heartbeat_at, running)
VALUES (:id, :host, :pid, :queues, :concurrency, :started_at, :last_heartbeat_at, :running)
ON CONFLICT (id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, queues = excluded.queues,
    concurrency = excluded.concurrency, started_at = excluded.started_at,
    last_heartbeat_at = excluded.last_heartbeat_at, running = excluded.running

-- name: worker_list
SELECT id, host, pid, queues, concurrency, started_at, last_heartbeat_at, running
FROM workers ORDER BY id

-- name: worker_remove
DELETE FROM workers WHERE id = :id
