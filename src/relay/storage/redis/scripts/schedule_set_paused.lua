-- schedule_set_paused.lua: schedule_set_paused: pause a schedule, or resume it at a new next run
-- (ticks missed while paused are not run).
--
-- Keys: P:schedule:<name>, P:schedules-due.
-- ARGV[2]  name
-- ARGV[3]  '1' to pause, '0' to resume
-- ARGV[4]  resuming: the next run in µs, or '' for none (ignored when pausing)
-- Returns {'missing'} or {'ok', the record as HGETALL gives it}.

local name, paused = ARGV[2], ARGV[3]
local k = key('schedule', name)
if redis.call('EXISTS', k) == 0 then
  return {'missing'}
end
local next_run = redis.call('HGET', k, 'next_run_at')
if paused == '0' then
  next_run = ARGV[4]
end
redis.call('HSET', k, 'paused', paused, 'updated_at', NOW_S)
schedule_set_next(k, name, next_run or '', paused)
return {'ok', redis.call('HGETALL', k)}
