-- insert_many.lua: job_insert_many (semantics.md rule 1). All or nothing: every check runs first.
--
-- Keys: P:job:<id> (created, or read), P:idem (read, written), P:seq, P:queues,
--   P:idx:<state>:<queue>, P:ready:<kind>:<queue> or P:waiting:<kind>:<queue>, P:layout (set once);
--   with ordering keys P:heads:<queue> and P:held:<n>:<queue>:<key>; publishes on P:wake.
-- ARGV[2]  origin: the inserting storage instance (it wakes its own waiters itself, and skips this
--          message)
-- ARGV[3]  batch token, random per call: a call retried after its reply was lost finds its own jobs
--          (same ids, same token) and returns them as created instead of refusing their ids
-- ARGV[4]  the jobs: a JSON array of packed jobs (P_* in _lib.lua; the caller always chose their
--          ids). One JSON argument, not one argument per field: redis-py would spend more time
--          encoding tens of thousands of arguments than the script spends inserting.
-- Returns insert_jobs()'s reply (_lib.lua): {'dup', id}, or {'ok', now, known, held}. The caller
--   builds the jobs not in `known` from what it sent, so that a big insert does not read ten thousand
--   jobs back.

local reply, woken = insert_jobs(cjson.decode(ARGV[4]), ARGV[3])
publish(woken, ARGV[2])
return reply
