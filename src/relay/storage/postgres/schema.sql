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
    -- flow control (migration 0003), appended as ALTER TABLE added them
    rate_key text,
    concurrency_key text,
    ordering_key text,
    held boolean NOT NULL DEFAULT false,  -- waiting behind an earlier job of its ordering key
    unique_until timestamptz,  -- when the idempotency key stops holding (NULL: never)
    unique_while text NOT NULL DEFAULT 'stored',
    -- PostgreSQL's own, after relay.storage.sql_rows.JOB_COLUMNS: a dead job that keeps its ordering key
    -- held (it died while its queue's ordering_dead was 'block'; a later change of the setting leaves it)
    dead_blocks boolean NOT NULL DEFAULT false,
    -- workflows (migration 0004): the run a job is a step of, and the step's name in it
    workflow_run_id text,
    workflow_step text,
    CONSTRAINT jobs_id_key UNIQUE (id),
    CONSTRAINT jobs_state_check CHECK (
        state IN ('pending', 'scheduled', 'running', 'completed', 'failed', 'dead', 'cancelled')
    ),
    CONSTRAINT jobs_kind_check CHECK (kind IN ('task', 'shell', 'external')),
    CONSTRAINT jobs_unique_while_check CHECK (unique_while IN ('stored', 'active'))
) WITH (fillfactor = 90);

-- Idempotency keys are unique among the jobs that have one (most have none: they stay out of it).
CREATE UNIQUE INDEX jobs_idempotency_key ON relay.jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- The claim walks this index per queue in claim order (priority DESC, run_at, seq) and stops after its
-- LIMIT. Partial, on pending jobs only: running and finished jobs cost the claim nothing, and neither do
-- jobs scheduled for later (they would otherwise sit in the walk whenever fewer jobs are due than the
-- claim wants, e.g. an idle worker facing 100,000 delayed jobs), nor held jobs (never claimed).
CREATE INDEX jobs_pending ON relay.jobs (queue, priority DESC, run_at, seq) WHERE state = 'pending' AND NOT held;

-- Scheduled and failed jobs by run_at: the claim takes the due ones (run_at <= now, a range at the start
-- of this index) and the scheduler promotes them to pending. Jobs due later are never read, nor held
-- ones (a held job is promoted once released).
CREATE INDEX jobs_due ON relay.jobs (run_at) WHERE state IN ('scheduled', 'failed') AND NOT held;

-- Running jobs by queue and concurrency key: the reaper reads them all, a claim of a queue with a
-- concurrency limit counts those of its queue (and key). lease_expires_at is deliberately not indexed:
-- heartbeats change it, and an index on it would make every heartbeat a non-HOT update. Running jobs
-- are few (the fleet's slots), so filtering them by lease is cheap.
CREATE INDEX jobs_running ON relay.jobs (queue, concurrency_key) WHERE state = 'running';

-- Ordering keys: the held jobs of a key in order (which one to release), and the jobs of a key that
-- block it (not held; pending, scheduled, running, failed, or dead with dead_blocks). Jobs without an
-- ordering key are in neither.
CREATE INDEX jobs_held ON relay.jobs (queue, ordering_key, seq) WHERE held;
CREATE INDEX jobs_ordered ON relay.jobs (queue, ordering_key)
    WHERE ordering_key IS NOT NULL AND NOT held AND state NOT IN ('completed', 'cancelled')
      AND (state <> 'dead' OR dead_blocks);

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

-- Every queue that ever held a job, was paused / resumed or given limits. Its limits
-- (relay.types.QueueLimits; NULL: no limit); `limited` says whether a claim has anything to check: the
-- claim of a queue that is not limited stays the one statement job_claim.
CREATE TABLE relay.queues (
    name text PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false,
    rate double precision,
    rate_burst integer,
    key_rate double precision,
    key_rate_burst integer,
    concurrency integer,
    key_concurrency integer,
    ordering_dead text NOT NULL DEFAULT 'continue',
    limited boolean GENERATED ALWAYS AS (
        rate IS NOT NULL OR key_rate IS NOT NULL OR concurrency IS NOT NULL OR key_concurrency IS NOT NULL
    ) STORED,
    CONSTRAINT queues_ordering_dead_check CHECK (ordering_dead IN ('continue', 'block'))
);

-- Token buckets: what a bucket held (`tokens`) at `at`; it refills at the limit's rate up to its burst.
-- rate_key NULL is the queue-wide bucket. A bucket with no row is full. Written only by claims (and
-- deleted by rate_buckets_prune once full again), under the lock of their queue's row.
CREATE TABLE relay.rate_buckets (
    queue text NOT NULL,
    rate_key text,
    tokens double precision NOT NULL,
    at timestamptz NOT NULL
);
CREATE UNIQUE INDEX rate_buckets_queue ON relay.rate_buckets (queue) WHERE rate_key IS NULL;
CREATE UNIQUE INDEX rate_buckets_key ON relay.rate_buckets (queue, rate_key) WHERE rate_key IS NOT NULL;

-- Periodic jobs (relay.types.Schedule); `job` is the template's NewJob.to_json().
CREATE TABLE relay.schedules (
    name text PRIMARY KEY,
    spec text NOT NULL,
    timezone text NOT NULL,
    job json NOT NULL,
    catch_up text NOT NULL,
    paused boolean NOT NULL,
    next_run_at timestamptz,
    last_run_at timestamptz,
    last_job_id text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX schedules_due ON relay.schedules (next_run_at) WHERE NOT paused;

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

-- Workflow runs (migration 0004): one row per run, its graph in `steps` as
-- [[name, [depends_on...], allow_failure, job_id], ...] in definition order; the row is the run's lock
-- (relay.storage.postgres.workflows).
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
CREATE INDEX workflow_runs_workflow ON relay.workflow_runs (workflow, seq);

-- Which migrations (file names without .sql) were applied, and when. The migrator creates this table
-- itself before reading it (queries.sql: migrations_table).
CREATE TABLE relay.schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL
);

-- The keys of `keys` held by a job whose hold lapsed at `at` (job_insert: the new job takes the key over).
-- LIMIT 1 keeps each lookup a probe of jobs_idempotency_key, never a join plan that reads the table.
CREATE FUNCTION relay.lapsed_keys(keys json, at timestamptz) RETURNS SETOF text
LANGUAGE sql STABLE
AS $$
    SELECT k.key FROM json_array_elements_text(keys) AS k(key)
    CROSS JOIN LATERAL (
        SELECT 1 FROM relay.jobs AS e
        WHERE e.idempotency_key = k.key
          AND (e.unique_until <= at OR (e.unique_while = 'active' AND e.state IN ('completed', 'dead', 'cancelled')))
        LIMIT 1
    ) AS e
$$;

-- Release the next held job of ordering keys left without an unheld blocking job. `keys` is a JSON array
-- of [queue, ordering_key] (repeats and null keys allowed). Every statement that may leave a key free
-- (a job ends, is cancelled, purged or pruned) or that adds held jobs (an insert holds every job with a
-- key, then calls this) calls it once, after its own changes: a VOLATILE function's statements see
-- them, and take a fresh snapshot each (READ COMMITTED), so the check below, which runs once the key's
-- lock is held, sees everything committed before. The lock is a transaction advisory lock per key,
-- taken by every caller in the same order (of the lock key), so that two transactions never wait for
-- each other's keys in a cycle. Returns the jobs released.
CREATE FUNCTION relay.release_next(keys json)
RETURNS TABLE (released_id text, released_queue text, released_state text)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    lock_key bigint;
BEGIN
    IF keys IS NULL OR json_array_length(keys) = 0 THEN
        RETURN;
    END IF;
    FOR lock_key IN
        SELECT DISTINCT hashtextextended(json_build_array(e.v->>0, e.v->>1)::text, 1380273220)
        FROM json_array_elements(keys) AS e(v)
        WHERE e.v->>1 IS NOT NULL
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(lock_key);
    END LOOP;
    RETURN QUERY
    UPDATE relay.jobs AS j SET held = false
    FROM (
        SELECT DISTINCT e.v->>0 AS q, e.v->>1 AS k FROM json_array_elements(keys) AS e(v)
        WHERE e.v->>1 IS NOT NULL
    ) AS k
    CROSS JOIN LATERAL (
        SELECT h.seq FROM relay.jobs AS h
        WHERE h.queue = k.q AND h.ordering_key = k.k AND h.held
        ORDER BY h.seq
        LIMIT 1
    ) AS n
    WHERE j.seq = n.seq AND j.held
      AND NOT EXISTS (
          SELECT 1 FROM relay.jobs AS b
          WHERE b.queue = k.q AND b.ordering_key = k.k AND NOT b.held
            AND b.state NOT IN ('completed', 'cancelled') AND (b.state <> 'dead' OR b.dead_blocks)
      )
    RETURNING j.id, j.queue, j.state;
END
$$;

-- The chained jobs (on_success / on_failure) of parents whose outcome is being recorded, inserted by
-- job_finish and job_reap_expired in the statement that records the outcome, and the release of the
-- ordering keys those parents leave. `chains` is a JSON array of {"parent": id, "chain": the stored
-- NewJob.to_json()}, in the parents' order (their seq order is the chained jobs' seq order); `ended`
-- a JSON array of [queue, ordering_key] of parents that stopped blocking their key. A chain whose id or
-- idempotency key is taken was enqueued already: it is skipped; a key whose hold lapsed is taken over
-- from its job. Chains with an ordering key are inserted held, then released like any other (see
-- relay.release_next). Returns the queue and state of each job inserted or released.
CREATE FUNCTION relay.insert_chained(chains json, ended json, chained_at timestamptz)
RETURNS TABLE (chained_queue text, chained_state text)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    keys json := ended;
BEGIN
    IF chains IS NULL AND ended IS NULL THEN
        RETURN;  -- most outcomes: no chain, no ordering key
    END IF;
    IF chains IS NOT NULL THEN
        UPDATE relay.jobs AS old SET idempotency_key = NULL
        FROM json_array_elements(chains) AS c(v)
        WHERE old.idempotency_key = c.v->'chain'->>'idempotency_key'
          AND (old.unique_until <= chained_at
               OR (old.unique_while = 'active' AND old.state IN ('completed', 'dead', 'cancelled')))
          AND NOT EXISTS (SELECT 1 FROM relay.jobs AS t WHERE t.id = c.v->'chain'->>'id');
        RETURN QUERY
        INSERT INTO relay.jobs AS j (
            id, queue, kind, state, priority, attempt, max_retries, backoff_kind, backoff_base,
            backoff_max, timeout, lease, run_at, created_at, updated_at, cancel_requested,
            idempotency_key, parent_id, payload, on_success, on_failure, tags, metadata, checkpoint,
            errors, rate_key, concurrency_key, ordering_key, held, unique_until, unique_while
        )
        SELECT coalesce(e.c->>'id', relay.new_job_id()), e.c->>'queue', e.c->>'kind',
               CASE WHEN s.start > chained_at THEN 'scheduled' ELSE 'pending' END,
               (e.c->>'priority')::integer, 0, (e.c->>'max_retries')::integer, e.c->'backoff'->>'kind',
               (e.c->'backoff'->>'base')::double precision, (e.c->'backoff'->>'max')::double precision,
               (e.c->>'timeout')::double precision, (e.c->>'lease')::double precision, s.start,
               chained_at, chained_at, false, e.c->>'idempotency_key', e.parent, e.c->'payload',
               CASE WHEN json_typeof(e.c->'on_success') = 'null' THEN NULL ELSE e.c->'on_success' END,
               CASE WHEN json_typeof(e.c->'on_failure') = 'null' THEN NULL ELSE e.c->'on_failure' END,
               e.c->'tags', e.c->'metadata',
               CASE WHEN json_typeof(e.c->'checkpoint') = 'null' THEN NULL ELSE e.c->'checkpoint' END,
               '[]', e.c->>'rate_key', e.c->>'concurrency_key', e.c->>'ordering_key',
               e.c->>'ordering_key' IS NOT NULL,
               chained_at + (e.c->>'unique_for')::double precision * interval '1 second',
               coalesce(e.c->>'unique_while', 'stored')
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
        RETURNING j.queue, j.state;
        SELECT json_agg(k.v) INTO keys FROM (
            SELECT json_array_elements(ended) AS v
            UNION ALL
            SELECT json_build_array(c.v->'chain'->>'queue', c.v->'chain'->>'ordering_key')
            FROM json_array_elements(chains) AS c(v)
            WHERE c.v->'chain'->>'ordering_key' IS NOT NULL
        ) AS k;
    END IF;
    RETURN QUERY SELECT r.released_queue, r.released_state FROM relay.release_next(keys) AS r;
END
$$;

-- The claim of a list of queues of which at least one is limited (job_claim claims from every other
-- list in one statement, and says when it meets a limited queue). The rules are those of
-- relay.storage.flow_control.ClaimPlanner, in the same order; read them there.
--
-- Atomic across processes: the rows of the named queues are locked first (FOR NO KEY UPDATE, in name
-- order, so two claims never wait for each other in a cycle; inserts, which register queues with
-- ON CONFLICT DO NOTHING, do not wait for it). Claims of a limited queue thus run one at a time, and
-- everything they count (running jobs, buckets) is read by later statements of this function, each
-- with a fresh snapshot: a claim that waited for the lock sees what the claim before it committed.
--
-- The walk: the candidates of every open queue, merged in claim order by one cursor (a UNION ALL of
-- one ordered index walk of jobs_pending per queue, plus the due end of jobs_due), read as far as
-- needed. A job the rules refuse is passed over and the walk goes on, up to p_max_passed of them. A
-- queue whose own concurrency or rate is spent is closed, and the cursor opened again without it, so
-- that its backlog is not read to the end. The jobs taken are then claimed in one UPDATE (SKIP LOCKED:
-- one that a claim of an unlimited queue took meanwhile is skipped, and its tokens given back), and the
-- buckets drawn from are written back as (tokens now, p_at).
--
-- Times: p_now when a test injects a clock; else the server's clock once the locks are held.
-- Returns the claimed jobs, then one last row with claimed_job NULL: claim_retry_after (seconds until
-- the soonest bucket that refused a job holds a token; NULL if none refused one) and claim_limited
-- (whether any open queue named is limited).
CREATE FUNCTION relay.claim_limited(
    p_queues json, p_kinds json, p_limit integer, p_worker text, p_now timestamptz, p_max_passed integer
)
RETURNS TABLE (claimed_job relay.jobs, claim_retry_after double precision, claim_limited boolean)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_kinds text[] := ARRAY(SELECT json_array_elements_text(p_kinds));
    v_known text[] := '{}';
    -- the open queues (named, not paused) and their limits, by position in v_names
    v_names text[] := '{}';
    v_conc integer[] := '{}';
    v_kconc integer[] := '{}';
    v_rate double precision[] := '{}';
    v_burst integer[] := '{}';
    v_krate double precision[] := '{}';
    v_kburst integer[] := '{}';
    v_running integer[] := '{}';  -- running now plus taken (queues with a concurrency)
    v_tokens double precision[] := '{}';  -- the queue's bucket now (NULL until read)
    v_qdrawn boolean[] := '{}';
    v_closed boolean[] := '{}';  -- no further job of the queue can be taken by this claim
    v_by_key jsonb := '{}';  -- [queue, concurrency_key] -> running now plus taken
    v_key_tokens jsonb := '{}';  -- [queue, rate_key] -> what its bucket holds now, as text (exact)
    v_drawn text[] := '{}';  -- the keys of v_key_tokens drawn from
    v_taken bigint[] := '{}';  -- the jobs the rules took, their queue's position, their key bucket
    v_taken_at integer[] := '{}';
    v_taken_key text[] := '{}';
    v_passed bigint[] := '{}';
    v_got bigint[] := '{}';
    v_at timestamptz;  -- the claim's time: p_now (a test's clock) or the server's, once the locks are held
    v_wait double precision;
    v_limited boolean := false;
    v_open text[];
    v_cur refcursor;
    v_reopen boolean;
    v_done boolean := false;
    v_take boolean;
    v_ck text;
    v_rk text;
    v_in_use integer;
    v_t double precision;
    v_count integer;
    q record;
    c record;
    r relay.jobs;
    i integer;
    t integer;
BEGIN
    FOR q IN
        SELECT p.name, p.paused, p.rate, p.rate_burst, p.key_rate, p.key_rate_burst, p.concurrency,
               p.key_concurrency, p.limited
        FROM relay.queues AS p
        WHERE p.name IN (SELECT json_array_elements_text(p_queues))
        ORDER BY p.name
        FOR NO KEY UPDATE
    LOOP
        v_known := array_append(v_known, q.name);
        CONTINUE WHEN q.paused;
        v_names := array_append(v_names, q.name);
        v_conc := array_append(v_conc, q.concurrency);
        v_kconc := array_append(v_kconc, q.key_concurrency);
        v_rate := array_append(v_rate, q.rate);
        v_burst := array_append(v_burst, q.rate_burst);
        v_krate := array_append(v_krate, q.key_rate);
        v_kburst := array_append(v_kburst, q.key_rate_burst);
        v_limited := v_limited OR q.limited;
    END LOOP;
    FOR q IN
        SELECT DISTINCT w.name FROM json_array_elements_text(p_queues) AS w(name)
        WHERE w.name <> ALL (v_known)
    LOOP
        v_names := array_append(v_names, q.name);  -- never seen: no limits, not paused
        v_conc := array_append(v_conc, NULL::integer);
        v_kconc := array_append(v_kconc, NULL::integer);
        v_rate := array_append(v_rate, NULL::double precision);
        v_burst := array_append(v_burst, NULL::integer);
        v_krate := array_append(v_krate, NULL::double precision);
        v_kburst := array_append(v_kburst, NULL::integer);
    END LOOP;
    FOR i IN 1..coalesce(array_length(v_names, 1), 0) LOOP
        v_count := 0;
        IF v_conc[i] IS NOT NULL THEN
            SELECT count(*) INTO v_count FROM relay.jobs AS j WHERE j.state = 'running' AND j.queue = v_names[i];
        END IF;
        v_running := array_append(v_running, v_count);
        v_tokens := array_append(v_tokens, NULL::double precision);
        v_qdrawn := array_append(v_qdrawn, false);
        v_closed := array_append(v_closed, false);
    END LOOP;
    SELECT coalesce(jsonb_object_agg(jsonb_build_array(k.queue, k.concurrency_key)::text, k.n), '{}')
    INTO v_by_key
    FROM (
        SELECT j.queue, j.concurrency_key, count(*) AS n FROM relay.jobs AS j
        WHERE j.state = 'running' AND j.concurrency_key IS NOT NULL
          AND j.queue IN (SELECT o.name FROM unnest(v_names, v_kconc) AS o(name, kc) WHERE o.kc IS NOT NULL)
        GROUP BY j.queue, j.concurrency_key
    ) AS k;
    -- Not now(), the start of the transaction: a claim that waited for the lock would record a start
    -- before the finish that freed its slot (read just above), and draw from buckets with a time earlier
    -- than the claims before it wrote.
    v_at := coalesce(p_now, clock_timestamp());

    <<walk>>
    LOOP
        v_open := ARRAY(SELECT o.name FROM unnest(v_names, v_closed) AS o(name, closed) WHERE NOT o.closed);
        EXIT walk WHEN cardinality(v_open) = 0;
        OPEN v_cur FOR EXECUTE
            'SELECT c.seq, c.queue, c.rate_key, c.concurrency_key FROM ('
            || (SELECT string_agg(format(
                    '(SELECT j.seq, j.queue, j.priority, j.run_at, j.rate_key, j.concurrency_key'
                    ' FROM relay.jobs AS j WHERE j.queue = %L AND j.state = ''pending'' AND NOT j.held'
                    ' AND j.run_at <= $1 AND j.kind = ANY ($2) AND j.seq <> ALL ($3)'
                    ' ORDER BY j.priority DESC, j.run_at, j.seq)', o.name), ' UNION ALL ')
                FROM unnest(v_open) AS o(name))
            || ' UNION ALL (SELECT j.seq, j.queue, j.priority, j.run_at, j.rate_key, j.concurrency_key'
               ' FROM relay.jobs AS j WHERE j.state IN (''scheduled'', ''failed'') AND NOT j.held'
               ' AND j.run_at <= $1 AND j.queue = ANY ($4) AND j.kind = ANY ($2) AND j.seq <> ALL ($3)'
               ' ORDER BY j.priority DESC, j.run_at, j.seq)) AS c ORDER BY c.priority DESC, c.run_at, c.seq'
            USING v_at, v_kinds, v_taken || v_passed, v_open;
        v_reopen := false;
        LOOP
            FETCH v_cur INTO c;
            EXIT WHEN NOT FOUND;
            i := array_position(v_names, c.queue);
            v_take := true;
            v_ck := NULL;
            v_rk := NULL;
            IF v_conc[i] IS NOT NULL AND v_running[i] >= v_conc[i] THEN
                v_take := false;
                v_closed[i] := true;
            END IF;
            IF v_take AND v_rate[i] IS NOT NULL THEN
                IF v_tokens[i] IS NULL THEN
                    SELECT least(v_burst[i], b.tokens
                                 + greatest(0, extract(epoch FROM v_at - b.at)::double precision) * v_rate[i])
                    INTO v_t FROM relay.rate_buckets AS b WHERE b.queue = c.queue AND b.rate_key IS NULL;
                    v_tokens[i] := coalesce(v_t, v_burst[i]);
                END IF;
                IF v_tokens[i] < 1 THEN
                    v_wait := least(v_wait, (1 - v_tokens[i]) / v_rate[i]);
                    v_take := false;
                    v_closed[i] := true;
                END IF;
            END IF;
            IF v_take AND c.concurrency_key IS NOT NULL AND v_kconc[i] IS NOT NULL THEN
                v_ck := jsonb_build_array(c.queue, c.concurrency_key)::text;
                v_in_use := coalesce((v_by_key->>v_ck)::integer, 0);
                IF v_in_use >= v_kconc[i] THEN
                    v_take := false;
                    v_passed := array_append(v_passed, c.seq);
                END IF;
            END IF;
            IF v_take AND c.rate_key IS NOT NULL AND v_krate[i] IS NOT NULL THEN
                v_rk := jsonb_build_array(c.queue, c.rate_key)::text;
                IF NOT v_key_tokens ? v_rk THEN
                    SELECT least(v_kburst[i], b.tokens
                                 + greatest(0, extract(epoch FROM v_at - b.at)::double precision) * v_krate[i])
                    INTO v_t FROM relay.rate_buckets AS b WHERE b.queue = c.queue AND b.rate_key = c.rate_key;
                    v_key_tokens := jsonb_set(v_key_tokens, ARRAY[v_rk], to_jsonb(coalesce(v_t, v_kburst[i])::text));
                END IF;
                v_t := (v_key_tokens->>v_rk)::double precision;
                IF v_t < 1 THEN
                    v_wait := least(v_wait, (1 - v_t) / v_krate[i]);
                    v_take := false;
                    v_passed := array_append(v_passed, c.seq);
                END IF;
            END IF;
            IF v_take THEN
                IF v_rate[i] IS NOT NULL THEN
                    v_tokens[i] := v_tokens[i] - 1;
                    v_qdrawn[i] := true;
                END IF;
                IF v_rk IS NOT NULL THEN
                    v_key_tokens := jsonb_set(v_key_tokens, ARRAY[v_rk], to_jsonb((v_t - 1)::text));
                    IF v_rk <> ALL (v_drawn) THEN
                        v_drawn := array_append(v_drawn, v_rk);
                    END IF;
                END IF;
                IF v_ck IS NOT NULL THEN
                    v_by_key := jsonb_set(v_by_key, ARRAY[v_ck], to_jsonb(v_in_use + 1));
                END IF;
                v_running[i] := v_running[i] + 1;
                v_taken := array_append(v_taken, c.seq);
                v_taken_at := array_append(v_taken_at, i);
                v_taken_key := array_append(v_taken_key, v_rk);
            END IF;
            v_done := cardinality(v_taken) >= p_limit OR cardinality(v_passed) >= p_max_passed;
            v_reopen := v_closed[i];
            EXIT WHEN v_done OR v_reopen;
        END LOOP;
        CLOSE v_cur;
        EXIT walk WHEN v_done OR NOT v_reopen;
    END LOOP;

    IF cardinality(v_taken) > 0 THEN
        FOR r IN
            UPDATE relay.jobs AS j SET
                state = 'running',
                attempt = j.attempt + 1,
                lease_token = replace(gen_random_uuid()::text, '-', ''),
                lease_expires_at = v_at + j.lease * interval '1 second',
                started_at = v_at,
                worker_id = p_worker,
                updated_at = v_at
            FROM (
                SELECT l.seq FROM relay.jobs AS l
                WHERE l.seq = ANY (v_taken) AND l.state IN ('pending', 'scheduled', 'failed') AND NOT l.held
                  AND l.run_at <= v_at
                ORDER BY l.seq
                FOR UPDATE SKIP LOCKED
            ) AS l
            WHERE j.seq = l.seq
            RETURNING j.*
        LOOP
            claimed_job := r;
            RETURN NEXT;
            v_got := array_append(v_got, r.seq);
        END LOOP;
        -- A job taken by someone else meanwhile gives its tokens back.
        FOR t IN 1..cardinality(v_taken) LOOP
            CONTINUE WHEN v_taken[t] = ANY (v_got);
            i := v_taken_at[t];
            IF v_rate[i] IS NOT NULL THEN
                v_tokens[i] := v_tokens[i] + 1;
            END IF;
            IF v_taken_key[t] IS NOT NULL THEN
                v_key_tokens := jsonb_set(v_key_tokens, ARRAY[v_taken_key[t]],
                    to_jsonb(((v_key_tokens->>v_taken_key[t])::double precision + 1)::text));
            END IF;
        END LOOP;
        INSERT INTO relay.rate_buckets AS b (queue, rate_key, tokens, at)
        SELECT o.name, NULL, o.tokens, v_at FROM unnest(v_names, v_tokens, v_qdrawn) AS o(name, tokens, drawn)
        WHERE o.drawn
        ON CONFLICT (queue) WHERE rate_key IS NULL DO UPDATE SET tokens = excluded.tokens, at = excluded.at;
        INSERT INTO relay.rate_buckets AS b (queue, rate_key, tokens, at)
        SELECT d.k::json->>0, d.k::json->>1, (v_key_tokens->>d.k)::double precision, v_at
        FROM unnest(v_drawn) AS d(k)
        ON CONFLICT (queue, rate_key) WHERE rate_key IS NOT NULL
        DO UPDATE SET tokens = excluded.tokens, at = excluded.at;
    END IF;
    claimed_job := NULL;
    claim_retry_after := v_wait;
    claim_limited := v_limited;
    RETURN NEXT;
END
$$;
