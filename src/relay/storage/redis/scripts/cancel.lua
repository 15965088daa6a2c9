-- cancel.lua: job_cancel (semantics.md rule 12).
--
-- Keys: P:job:<id>, P:idx:<state>:<queue>, P:ready:<kind>:<queue> or P:waiting:<kind>:<queue>,
--   P:finished:cancelled.
-- ARGV[2]  job id
-- Returns {'missing'}, {'invalid', state}, or {'ok', read_job() of the job as now stored}.
-- A running job is only flagged: its worker learns at its next heartbeat and stops it.

local j = load(ARGV[2])
if not j then
  return {'missing'}
end
local k = job_key(j.id)
if j.state == 'pending' or WAITING[j.state] then
  unindex(j)
  j.state = 'cancelled'
  j.finished_at = NOW
  store(j, nil)
elseif j.state == 'running' then
  redis.call('HSET', k, 'cancel_requested', '1', 'updated_at', NOW_S)
else
  return {'invalid', j.state}
end
return {'ok', read_job(j.id)}
