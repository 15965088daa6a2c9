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
-- - An ordering key is a pair: a list of them is bound as a JSON array of [queue, ordering_key] arrays,
--   read with `p.value ->> 0` and `p.value ->> 1`.
-- - A queue is *limited* when it has a rate, key_rate, concurrency or key_concurrency
--   (relay.types.QueueLimits.limited); ordering_dead alone does not make it so.

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

-- name: job_insert_flow
-- job_insert for a job that sets a flow-control field (rate, concurrency or ordering key, unique window):
-- the 27-tuple of relay.storage.sqlite.rows.new_job, the 21 of job_insert and then rate_key,
-- concurrency_key, ordering_key, held, unique_until, unique_while. The other two statements leave
-- these columns to their defaults.
INSERT INTO jobs (
    id, queue, kind, state, priority, max_retries, backoff_kind, backoff_base, backoff_max, timeout,
    lease, run_at, created_at, updated_at, idempotency_key, parent_id, payload, on_success, on_failure,
    tags, metadata, checkpoint, attempt, cancel_requested, errors,
    rate_key, concurrency_key, ordering_key, held, unique_until, unique_while
) VALUES (
    ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
    ?11, ?12, ?13, ?13, ?14, ?15, ?16, ?17, ?18,
    ?19, ?20, ?21, 0, 0, '[]',
    ?22, ?23, ?24, ?25, ?26, ?27
)

-- name: job_insert_workflow
-- job_insert_flow for a workflow's step (relay.storage.sqlite.workflows): the 29-tuple of
-- relay.storage.sqlite.rows.new_job, the 27 of job_insert_flow and then workflow_run_id, workflow_step.
-- The other statements leave both NULL.
INSERT INTO jobs (
    id, queue, kind, state, priority, max_retries, backoff_kind, backoff_base, backoff_max, timeout,
    lease, run_at, created_at, updated_at, idempotency_key, parent_id, payload, on_success, on_failure,
    tags, metadata, checkpoint, attempt, cancel_requested, errors,
    rate_key, concurrency_key, ordering_key, held, unique_until, unique_while,
    workflow_run_id, workflow_step
) VALUES (
    ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
    ?11, ?12, ?13, ?13, ?14, ?15, ?16, ?17, ?18,
    ?19, ?20, ?21, 0, 0, '[]',
    ?22, ?23, ?24, ?25, ?26, ?27,
    ?28, ?29
)

-- name: job_ids_taken
SELECT id FROM jobs WHERE id IN (SELECT value FROM json_each(:ids))

-- name: job_by_idempotency_keys
SELECT * FROM jobs WHERE idempotency_key IN (SELECT value FROM json_each(:keys))

-- name: idempotency_keys_release
-- Jobs whose key lapsed give it up to the jobs about to be inserted (before them: the key is UNIQUE).
-- Nothing else of theirs changes, updated_at included.
UPDATE jobs SET idempotency_key = NULL WHERE seq IN (SELECT value FROM json_each(:seqs))

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
  AND held = 0

-- name: job_claim
-- The claim of queues without limits: one statement picks and marks the jobs. For each wanted queue
-- that is neither paused nor limited, the inner subquery walks the partial index jobs_claim in claim
-- order and stops after :limit rows (its state and held terms are the index's own WHERE, verbatim); the
-- outer query merges the queues' candidates and keeps :limit. Limited queues are claimed by
-- relay.storage.sqlite.flow (job_claim_walk, job_claim_seqs) instead.
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
          AND w.state = 'pending' AND w.held = 0
          AND w.run_at <= :now
          AND w.kind IN (SELECT value FROM json_each(:kinds))
        ORDER BY w.priority DESC, w.run_at, w.seq
        LIMIT :limit
    )
    WHERE q.value NOT IN (
        SELECT name FROM queues
        WHERE paused = 1
           OR rate IS NOT NULL OR key_rate IS NOT NULL OR concurrency IS NOT NULL
           OR key_concurrency IS NOT NULL
    )
    ORDER BY j.priority DESC, j.run_at, j.seq
    LIMIT :limit
)
RETURNING *

-- name: queue_limits_claimed
-- Those of the queues a claim names that are limited or paused, with their limits
-- (relay.storage.sqlite.flow.claimed_queues): a primary-key lookup per queue name.
SELECT name, paused, rate, burst, key_rate, key_burst, concurrency, key_concurrency, ordering_dead
FROM queues
WHERE name IN (SELECT value FROM json_each(:queues))
  AND (paused = 1 OR rate IS NOT NULL OR key_rate IS NOT NULL OR concurrency IS NOT NULL
       OR key_concurrency IS NOT NULL)

-- name: job_claim_walk
-- The claimable jobs of one queue in claim order, for the claim of limited queues, which offers them
-- to relay.storage.flow_control.ClaimPlanner one by one and stops reading when it has enough (the
-- statement is stepped lazily: rows not read cost nothing). Same index and terms as job_claim.
SELECT seq, priority, run_at, rate_key, concurrency_key
FROM jobs INDEXED BY jobs_claim
WHERE queue = :queue
  AND state = 'pending' AND held = 0
  AND run_at <= :now
  AND kind IN (SELECT value FROM json_each(:kinds))
ORDER BY priority DESC, run_at, seq
LIMIT :bound

-- name: job_claim_seqs
-- Marks the jobs the planner chose (by seq) as claimed; the same SET as job_claim.
-- RETURNING gives no order: the caller sorts the rows by (priority DESC, run_at, seq).
UPDATE jobs SET
    state = 'running',
    attempt = attempt + 1,
    lease_token = relay_new_lease_token(),
    lease_expires_at = :now + CAST(round(lease * 1000000) AS INTEGER),
    started_at = :now,
    worker_id = :worker_id,
    updated_at = :now
WHERE seq IN (SELECT value FROM json_each(:seqs)) AND state = 'pending'
RETURNING *

-- name: job_running_counts
-- Running jobs of the limited queues, per concurrency key (NULL: none): what the concurrency limits are
-- checked against, counted from the rows themselves so that no way out of running can forget a slot.
-- A range of jobs_queue_state per queue.
SELECT queue, concurrency_key, count(*)
FROM jobs
WHERE queue IN (SELECT value FROM json_each(:queues)) AND state = 'running'
GROUP BY queue, concurrency_key

-- name: rate_bucket_get
SELECT tokens, at FROM rate_buckets WHERE queue = :queue AND scope = :scope AND key = :key

-- name: rate_bucket_put
INSERT INTO rate_buckets (queue, scope, key, tokens, at) VALUES (:queue, :scope, :key, :tokens, :at)
ON CONFLICT (queue, scope, key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at

-- name: job_running_fence
-- What heartbeat and finish decide on: the running jobs among :ids, with their lease tokens.
SELECT id, lease_token, cancel_requested, attempt, max_retries, queue, on_success, on_failure
FROM jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'running'

-- name: job_finish_fence
-- job_running_fence for finish, plus what the outcome's side effects need: the ordering key (a key
-- left without its running job releases the next one), whether the queue limits its running jobs
-- (then a finish frees a slot, and wakes the queue's workers), and the workflow run and step of a
-- step's job (its end releases or cancels the run's other steps: relay.storage.sqlite.workflows).
SELECT id, lease_token, cancel_requested, attempt, max_retries, queue, on_success, on_failure,
       ordering_key,
       (SELECT concurrency IS NOT NULL OR key_concurrency IS NOT NULL FROM queues WHERE name = jobs.queue),
       workflow_run_id, workflow_step
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
    -- a dead job of an ordering key keeps the key held if its queue says so now, and stays so
    dead_blocks = CASE WHEN :state = 'dead' AND ordering_key IS NOT NULL THEN coalesce(
        (SELECT ordering_dead = 'block' FROM queues WHERE name = jobs.queue), 0) ELSE 0 END,
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
    dead_blocks = CASE WHEN NOT cancel_requested AND attempt > max_retries AND ordering_key IS NOT NULL
        THEN coalesce((SELECT ordering_dead = 'block' FROM queues WHERE name = jobs.queue), 0) ELSE 0 END,
    updated_at = :now
WHERE state = 'running' AND lease_expires_at < :now
RETURNING seq, id, state, queue, on_failure, ordering_key, workflow_run_id, workflow_step

-- name: queues_concurrency_limited
-- Those of :queues whose running jobs are limited: a job leaving running there wakes their workers.
SELECT name FROM queues
WHERE name IN (SELECT value FROM json_each(:queues))
  AND (concurrency IS NOT NULL OR key_concurrency IS NOT NULL)

-- name: job_promote_due
-- Held jobs keep their state until they are released (relay.storage.base).
UPDATE jobs SET state = 'pending', updated_at = :now
WHERE state IN ('scheduled', 'failed') AND run_at <= :now AND held = 0
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
RETURNING id, queue, ordering_key

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
-- A cancelled job waits for nothing any more: held or not, it is not held now.
UPDATE jobs SET state = 'cancelled', held = 0, finished_at = :now, updated_at = :now
WHERE id = :id
RETURNING *

-- name: job_cancel_running
UPDATE jobs SET cancel_requested = 1, updated_at = :now
WHERE id = :id
RETURNING *

-- name: job_requeue_one
UPDATE jobs SET
    state = 'pending', run_at = :now, finished_at = NULL, cancel_requested = 0, dead_blocks = 0,
    lease_token = NULL, lease_expires_at = NULL, updated_at = :now
WHERE id = :id
RETURNING *

-- name: job_requeue_many
UPDATE jobs SET
    state = 'pending', run_at = :now, finished_at = NULL, cancel_requested = 0, dead_blocks = 0,
    lease_token = NULL, lease_expires_at = NULL, updated_at = :now
WHERE state IN (SELECT value FROM json_each(:states)) AND (:queue IS NULL OR queue = :queue)
RETURNING *

-- name: job_requeue_lookup_one
-- Before a requeue: the job if it has an ordering key or is a workflow's step, with whether it is
-- outside its key's line now (cancelled, or dead where dead jobs do not block: such a job rejoins it,
-- held behind its current job), and the state it comes back from, its run and its step (a step back
-- from a final state brings back what its failure cancelled: relay.storage.sqlite.workflows).
SELECT seq, queue, ordering_key,
       state = 'cancelled' OR (state = 'dead' AND NOT dead_blocks),
       id, state, workflow_run_id, workflow_step
FROM jobs
WHERE id = :id AND (ordering_key IS NOT NULL OR workflow_run_id IS NOT NULL)

-- name: job_requeue_lookup_many
-- job_requeue_lookup_one for the jobs job_requeue_many moves, by seq.
SELECT seq, queue, ordering_key,
       state = 'cancelled' OR (state = 'dead' AND NOT dead_blocks),
       id, state, workflow_run_id, workflow_step
FROM jobs
WHERE state IN (SELECT value FROM json_each(:states)) AND (:queue IS NULL OR queue = :queue)
  AND (ordering_key IS NOT NULL OR workflow_run_id IS NOT NULL)
ORDER BY seq

-- name: job_hold
UPDATE jobs SET held = 1 WHERE seq IN (SELECT value FROM json_each(:seqs))

-- name: job_purge_ordered
-- The ordering keys of the jobs a purge deletes: each may have its next job to release after it.
SELECT DISTINCT queue, ordering_key FROM jobs
WHERE state IN (SELECT value FROM json_each(:states)) AND (:queue IS NULL OR queue = :queue)
  AND ordering_key IS NOT NULL

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
-- The oldest pending job of each queue is one seek in jobs_queue_state (queue, state, run_at); the
-- queue's own bucket (NULL tokens when never drawn from, or pruned) one primary-key lookup.
SELECT name, paused,
       (SELECT min(run_at) FROM jobs WHERE queue = queues.name AND state = 'pending' AND held = 0),
       rate, burst, key_rate, key_burst, concurrency, key_concurrency, ordering_dead, b.tokens, b.at
FROM queues
LEFT JOIN rate_buckets AS b ON b.queue = queues.name AND b.scope = 'queue' AND b.key = ''
ORDER BY name

-- name: queue_counts
SELECT queue, state, count(*) FROM jobs GROUP BY queue, state

-- name: queue_set_paused
INSERT INTO queues (name, paused) VALUES (:name, :paused)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused

-- name: queue_limits_set
INSERT INTO queues (
    name, rate, burst, key_rate, key_burst, concurrency, key_concurrency, ordering_dead
) VALUES (
    :name, :rate, :burst, :key_rate, :key_burst, :concurrency, :key_concurrency, :ordering_dead
)
ON CONFLICT (name) DO UPDATE SET
    rate = excluded.rate, burst = excluded.burst, key_rate = excluded.key_rate,
    key_burst = excluded.key_burst, concurrency = excluded.concurrency,
    key_concurrency = excluded.key_concurrency, ordering_dead = excluded.ordering_dead

-- name: rate_buckets_cut
-- New limits: the queue's buckets of one scope are refilled to :now at the new :rate and cut to the new
-- :burst (relay.storage.flow_control.tokens_now, in the same floating-point steps).
UPDATE rate_buckets SET
    tokens = min(CAST(:burst AS REAL), tokens + max(0.0, (:now - at) / 1000000.0) * :rate),
    at = :now
WHERE queue = :queue AND scope = :scope

-- name: rate_buckets_with_limits
-- Every bucket with the limit it is drawn under now (NULL: the limit is gone), for rate_buckets_prune.
SELECT b.queue, b.scope, b.key, b.tokens, b.at,
       CASE b.scope WHEN 'queue' THEN q.rate ELSE q.key_rate END,
       CASE b.scope WHEN 'queue' THEN q.burst ELSE q.key_burst END
FROM rate_buckets AS b
LEFT JOIN queues AS q ON q.name = b.queue

-- name: rate_bucket_delete
DELETE FROM rate_buckets WHERE queue = ? AND scope = ? AND key = ?

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

-- ---------------------------------------------------------------------------------------------------
-- ordering keys (relay.storage.sqlite.ordering)
--
-- Both walk jobs_ordering, whose WHERE they repeat (`ordering_key = ...` implies its IS NOT NULL term).
-- A *blocking* job: pending, scheduled, running or failed, or dead with dead_blocks (it died while its
-- queue's ordering_dead was 'block'; relay.storage.base). Held jobs are always pending or scheduled
-- (a claim never takes them).

-- name: ordering_blocked
-- Those of :pairs that have an unheld blocking job: a job inserted with one of them is held.
SELECT DISTINCT j.queue, j.ordering_key
FROM json_each(:pairs) AS p, jobs AS j INDEXED BY jobs_ordering
WHERE j.queue = p.value ->> 0 AND j.ordering_key = p.value ->> 1 AND j.held = 0
  AND j.state NOT IN ('completed', 'cancelled')
  AND (j.state <> 'dead' OR j.dead_blocks)

-- name: ordering_release
-- For each of :pairs left without an unheld blocking job, its held job inserted first is released.
-- Returns the queue of each released job (its workers are woken).
UPDATE jobs SET held = 0
WHERE seq IN (
    SELECT (
        SELECT h.seq FROM jobs AS h INDEXED BY jobs_ordering
        WHERE h.queue = p.value ->> 0 AND h.ordering_key = p.value ->> 1 AND h.held = 1
          AND h.state NOT IN ('completed', 'cancelled')
        ORDER BY h.seq
        LIMIT 1
    )
    FROM json_each(:pairs) AS p
    WHERE NOT EXISTS (
        SELECT 1 FROM jobs AS b INDEXED BY jobs_ordering
        WHERE b.queue = p.value ->> 0 AND b.ordering_key = p.value ->> 1 AND b.held = 0
          AND b.state NOT IN ('completed', 'cancelled')
          AND (b.state <> 'dead' OR b.dead_blocks)
    )
)
RETURNING queue

-- ---------------------------------------------------------------------------------------------------
-- schedules (relay.storage.sqlite.schedules)

-- name: schedule_upsert
-- A new schedule, or a new definition of one: paused, last run and created_at stay, and next_run_at
-- too unless the spec or the timezone changed (the SET expressions read the row as it was).
INSERT INTO schedules (
    name, spec, timezone, job, catch_up, paused, next_run_at, last_run_at, last_job_id,
    created_at, updated_at
) VALUES (:name, :spec, :timezone, :job, :catch_up, 0, :next_run_at, NULL, NULL, :now, :now)
ON CONFLICT (name) DO UPDATE SET
    spec = excluded.spec,
    timezone = excluded.timezone,
    job = excluded.job,
    catch_up = excluded.catch_up,
    next_run_at = CASE
        WHEN spec = excluded.spec AND timezone = excluded.timezone THEN next_run_at
        ELSE excluded.next_run_at
    END,
    updated_at = excluded.updated_at
RETURNING *

-- name: schedule_get
SELECT * FROM schedules WHERE name = :name

-- name: schedule_list
SELECT * FROM schedules ORDER BY name

-- name: schedule_remove
DELETE FROM schedules WHERE name = :name

-- name: schedule_set_paused
-- Resuming sets next_run_at (ticks missed while paused are not run); pausing keeps it.
UPDATE schedules SET
    paused = :paused,
    next_run_at = CASE WHEN :paused THEN next_run_at ELSE :next_run_at END,
    updated_at = :now
WHERE name = :name
RETURNING *

-- name: schedule_due
-- A range of schedules_due, whose WHERE this repeats.
SELECT * FROM schedules
WHERE paused = 0 AND next_run_at IS NOT NULL AND next_run_at <= :now
ORDER BY next_run_at, name
LIMIT :limit

-- name: schedule_fired
-- The compare-and-set of schedule_fire: applied only while the tick is still the one the caller read.
UPDATE schedules SET
    next_run_at = :next_run_at,
    last_run_at = CASE WHEN :job_id IS NULL THEN last_run_at ELSE :tick END,
    last_job_id = coalesce(:job_id, last_job_id),
    updated_at = :now
WHERE name = :name AND paused = 0 AND next_run_at = :expected_next

-- ---------------------------------------------------------------------------------------------------
-- workflow runs (relay.storage.sqlite.workflows)
--
-- A run's steps are read and changed by their job ids (the run's `steps` graph holds them), each a
-- lookup in the jobs.id index: no index on jobs.workflow_run_id, so that jobs outside workflows pay
-- for none.

-- name: workflow_run_insert
INSERT INTO workflow_runs (id, workflow, policy, params, cancelled, created_at, steps)
VALUES (:id, :workflow, :policy, :params, 0, :now, :steps)

-- name: workflow_run_get
SELECT seq, id, workflow, policy, params, cancelled, created_at, steps FROM workflow_runs WHERE id = :id

-- name: workflow_run_list
-- Newest first from below the cursor (:before_seq); the caller asks one more row than a page.
SELECT seq, id, workflow, policy, params, cancelled, created_at, steps FROM workflow_runs
WHERE seq < :before_seq
ORDER BY seq DESC
LIMIT :limit

-- name: workflow_run_list_of
-- workflow_run_list of one workflow: a range of workflow_runs_workflow, walked backwards.
SELECT seq, id, workflow, policy, params, cancelled, created_at, steps FROM workflow_runs
WHERE workflow = :workflow AND seq < :before_seq
ORDER BY seq DESC
LIMIT :limit

-- name: workflow_run_set_cancelled
UPDATE workflow_runs SET cancelled = :cancelled WHERE id = :id

-- name: workflow_steps_now
-- What the rules decide on (relay.storage.workflow_rules.StepNow), and each step's queue (to wake).
SELECT id, state, held, queue FROM jobs WHERE id IN (SELECT value FROM json_each(:ids))

-- name: workflow_steps_read
-- What a run shows of its steps (relay.types.WorkflowStep).
SELECT id, state, held, attempt, result, started_at, finished_at
FROM jobs WHERE id IN (SELECT value FROM json_each(:ids))

-- name: workflow_steps_release
-- Steps whose dependencies all succeeded: claimable once due (updated_at stays, as for ordering keys).
UPDATE jobs SET held = 0 WHERE id IN (SELECT value FROM json_each(:ids))

-- name: workflow_steps_cancel
-- Waiting steps that can no longer run (a failure elsewhere), or every waiting step of a cancelled run:
-- cancelled as job_cancel_waiting cancels a job.
UPDATE jobs SET state = 'cancelled', held = 0, finished_at = :now, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND state IN ('pending', 'scheduled', 'failed')

-- name: workflow_steps_cancel_running
-- The running steps of a cancelled run are asked to stop, as job_cancel_running asks a job.
UPDATE jobs SET cancel_requested = 1, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'running'

-- name: workflow_step_revive
-- A step the retry of another brings back (a step its failure cancelled), as job_requeue_one would,
-- held while a step it depends on has not succeeded; for a step the requeue itself moved, its held flag.
UPDATE jobs SET
    state = 'pending', run_at = :now, finished_at = NULL, cancel_requested = 0, dead_blocks = 0,
    lease_token = NULL, lease_expires_at = NULL, held = :held, updated_at = :now
WHERE id = :id
