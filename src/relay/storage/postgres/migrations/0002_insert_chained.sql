-- 0002: one function for the chained jobs that job_finish and job_reap_expired insert (they held two
-- copies of the same INSERT).

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
