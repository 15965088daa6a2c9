-- workflow_start.lua: workflow_start: a run and one job per step, all or nothing.
--
-- Keys: P:run:<id> (read, then written), P:run-seq, P:runs and P:runs-of:<workflow> (the run listed);
--   the steps' jobs as in insert_many.lua (P:job:<id>, P:seq, P:queues, P:idx:<state>:<queue>,
--   P:ready:<kind>:<queue> or P:waiting:<kind>:<queue> for the steps without dependencies, P:layout);
--   publishes on P:wake (the roots' queues).
-- ARGV[2]  origin: the starting storage instance (it wakes its own waiters, see publish())
-- ARGV[3]  batch token, random per call: a call retried after its reply was lost finds its own run
-- ARGV[4]  run id
-- ARGV[5]  workflow name
-- ARGV[6]  failure policy ('stop' / 'continue')
-- ARGV[7]  params (JSON object)
-- ARGV[8]  graph (JSON array, in definition order, of [name, job id, depends_on, allow_failure])
-- ARGV[9]  the steps' jobs: a JSON array of packed jobs (P_* in _lib.lua) with the workflow tail
--          (run id, '1' for the steps with dependencies: written held)
-- Returns {'dup', id} (a step's client-chosen id is taken: nothing written), {'exists', created 0/1,
--   read}, the run existing already (created 1: written by a first try of this very call), or
--   {'ok', 1, read, queues woken}; read is workflows().read() of the run.
-- The caller refused ordering and idempotency keys on steps, so every job is written afresh.

local wf = workflows()
local run_id, batch = ARGV[4], ARGV[3]
local run_key = key('run', run_id)
local owner = redis.call('HGET', run_key, 'batch')
if owner then
  return {'exists', owner == batch and 1 or 0, wf.read(run_id)}
end
local reply, woken = insert_jobs(cjson.decode(ARGV[9]), batch)
if reply[1] == 'dup' then
  return reply
end
local seq = fmt(redis.call('INCR', key('run_seq')))
redis.call('HSET', run_key, 'workflow', ARGV[5], 'policy', ARGV[6], 'params', ARGV[7], 'graph', ARGV[8],
  'created_at', NOW_S, 'seq', seq, 'batch', batch)
redis.call('ZADD', key('runs'), seq, run_id)
redis.call('ZADD', key('runs_of', ARGV[5]), seq, run_id)
return {'ok', 1, wf.read(run_id), publish(woken, ARGV[2])}
