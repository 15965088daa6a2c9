-- schedule_fire.lua: schedule_fire: enqueue one tick of a schedule, at most once. A compare-and-set on
-- next_run_at and the insert of the tick's job, in one script: atomic.
--
-- Keys: P:schedule:<name>, P:schedules-due; the job's keys as in insert_many.lua (insert_jobs());
--   publishes on P:wake.
-- ARGV[2]  name
-- ARGV[3]  expected next_run_at in µs (what the caller read from schedule_due)
-- ARGV[4]  the tick in µs
-- ARGV[5]  the new next_run_at in µs, or '' for none
-- ARGV[6]  call token, random per call (as an insert's batch token): a call sent again after its reply
--          was lost finds that it fired already, and says so
-- ARGV[7]  origin, as for insert_many.lua
-- ARGV[8]  the tick's job: a JSON array of one packed job, or '' (a skipped tick)
-- Returns {'not'} (missing, paused, or next_run_at moved: another node fired the tick first),
--   {'again', job id or ''} (this very call fired it), insert_jobs()'s {'dup', id} (the job's
--   client-chosen id is taken: nothing written), or {'fired', insert reply or ''}: the insert's
--   {'ok', now, known, held}.
-- The job carries the idempotency key of the (schedule, tick) pair, so that a tick enqueued before (by
-- a schedule removed and added again) returns that job instead of a second one.

local name, expected, tick, next_run = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local token, origin, job_json = ARGV[6], ARGV[7], ARGV[8]
local k = key('schedule', name)
local v = redis.call('HMGET', k, 'paused', 'next_run_at', 'fired_by', 'last_job_id')
if not v[1] then
  return {'not'}
end
if v[1] == '1' or v[2] ~= expected then
  if v[3] == token then
    return {'again', job_json ~= '' and v[4] or ''}
  end
  return {'not'}
end

local reply, woken, job_id = '', {}, nil
if job_json ~= '' then
  local jobs = cjson.decode(job_json)
  reply, woken = insert_jobs(jobs, token)
  if reply[1] == 'dup' then
    return reply
  end
  local known = reply[3][1]
  job_id = known and known[3] or jobs[1][P_ID]
end
redis.call('HSET', k, 'updated_at', NOW_S, 'fired_by', token)
if job_id then
  redis.call('HSET', k, 'last_run_at', tick, 'last_job_id', job_id)
end
schedule_set_next(k, name, next_run, '0')
publish(woken, origin)
return {'fired', reply}
