-- workflow_cancel.lua: workflow_cancel: the run flagged cancelled, its waiting steps cancelled at once
-- and its running ones asked to stop (as cancel.lua does). Effects do not cascade in a cancelled run.
-- The same call twice gives the same run: safe to send again.
--
-- Keys: P:run:<id> (read, `cancelled` written), its steps' jobs (P:job:<id>, P:idx:<state>:<queue>,
--   P:ready:<kind>:<queue> or P:waiting:<kind>:<queue>, P:finished:cancelled); publishes on P:wake.
-- ARGV[2]  origin: the cancelling storage instance (it wakes its own waiters, see publish())
-- ARGV[3]  run id
-- Returns {'missing'}, or {'ok', read, queues woken}; read is workflows().read() of the run.

local wf = workflows()
local run = wf.run_of(ARGV[3])
if not run then
  return {'missing'}
end
wf.set_cancelled(run, true)
local woken = {}
begin_batch()
for _, node in ipairs(run.nodes) do
  local j = load(node[2])
  if j and j.state == 'running' then
    redis.call('HSET', job_key(j.id), 'cancel_requested', '1', 'updated_at', NOW_S)
  elseif j and not FINAL[j.state] then
    unindex(j)
    finish_final(j, 'cancelled', nil, woken)
  end
end
flush_batch()
return {'ok', wf.read(ARGV[3]), publish(woken, ARGV[2])}
