-- cancel.lua: job_cancel (semantics.md rule 12).
--
-- Keys: P:job:<id>, P:idx:<state>:<queue>, P:ready:<kind>:<queue> or P:waiting:<kind>:<queue>,
--   P:finished:cancelled; with an ordering key P:held:<n>:<queue>:<key> (a held job leaves it) or
--   P:heads:<queue> (a head lets its key go on); a workflow's step: its run's keys as in finish.lua
--   (its end released or cancelled other steps); publishes on P:wake (a released job).
-- ARGV[2]  origin: the cancelling storage instance (it wakes its own waiters, see publish())
-- ARGV[3]  job id
-- Returns {'missing'}, {'invalid', state}, or {'ok', read_job() of the job as now stored, queues
--   woken}.
-- A running job is only flagged: its worker learns at its next heartbeat and stops it.

local j = load(ARGV[3])
if not j then
  return {'missing'}
end
local k, woken = job_key(j.id), {}
if j.state == 'pending' or WAITING[j.state] then
  unindex(j)
  finish_final(j, 'cancelled', nil, woken)
elseif j.state == 'running' then
  redis.call('HSET', k, 'cancel_requested', '1', 'updated_at', NOW_S)
else
  return {'invalid', j.state}
end
return {'ok', read_job(j.id), publish(woken, ARGV[2])}
