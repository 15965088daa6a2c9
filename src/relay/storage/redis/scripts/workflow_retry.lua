-- workflow_retry.lua: workflow_retry_step: a failed step's job requeued (requeue_job in _lib.lua:
-- workflow_rules.to_retry), with the steps its failure cancelled. Not safe to send again (a second
-- call finds the step pending).
--
-- Keys: P:run:<id> (read, `cancelled` cleared), its steps' jobs (read; those that come back as in
--   requeue.lua); publishes on P:wake.
-- ARGV[2]  origin: the retrying storage instance (it wakes its own waiters, see publish())
-- ARGV[3]  run id
-- ARGV[4]  step name
-- Returns {'missing'} (no such run), {'nostep'}, {'invalid', job id, state} (its job is gone: state
--   'gone'; or to_retry refuses), or {'ok', read, queues woken}; read is workflows().read().

local wf = workflows()
local run = wf.run_of(ARGV[3])
if not run then
  return {'missing'}
end
local node = run.by_name[ARGV[4]]
if not node then
  return {'nostep'}
end
local j = load(node[2])
if not j then
  return {'invalid', node[2], 'gone'}
end
if not wf.to_retry(run, wf.reader(), node) then
  return {'invalid', node[2], j.state}
end
local woken = {}
begin_batch()
requeue_job(j, woken)
flush_batch()
return {'ok', wf.read(ARGV[3]), publish(woken, ARGV[2])}
