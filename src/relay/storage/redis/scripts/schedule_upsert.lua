-- schedule_upsert.lua: schedule_upsert: create a schedule, or replace the definition of one.
--
-- Keys: P:schedule:<name> (the record, see relay.storage.redis.schedules), P:schedules (every name),
--   P:schedules-due (score next_run_at, while not paused and there is a next run).
-- ARGV[2]  name
-- ARGV[3]  spec
-- ARGV[4]  timezone
-- ARGV[5]  the job template: NewJob.to_json as JSON
-- ARGV[6]  catch_up
-- ARGV[7]  next_run_at in µs, or '' for none
-- Returns the record as HGETALL gives it.
-- A replaced schedule keeps paused, last_run_at, last_job_id and created_at, and keeps its
-- next_run_at unless the spec or the timezone changed (redefining it at every worker start must not
-- skip a tick that is due).

local name, spec, timezone = ARGV[2], ARGV[3], ARGV[4]
local k = key('schedule', name)
local old = redis.call('HMGET', k, 'spec', 'timezone', 'paused', 'next_run_at')
local next_run, paused = ARGV[7], '0'
if old[1] then
  paused = old[3] or '0'
  if old[1] == spec and old[2] == timezone then
    next_run = old[4] or ''
  end
else
  redis.call('HSET', k, 'created_at', NOW_S)
end
redis.call('HSET', k, 'spec', spec, 'timezone', timezone, 'job', ARGV[5], 'catch_up', ARGV[6],
  'paused', paused, 'updated_at', NOW_S)
schedule_set_next(k, name, next_run, paused)
redis.call('ZADD', key('schedules'), 0, name)
return redis.call('HGETALL', k)
