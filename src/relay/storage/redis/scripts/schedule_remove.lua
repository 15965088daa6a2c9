-- schedule_remove.lua: schedule_remove: delete a schedule (the jobs it enqueued stay).
--
-- Keys: P:schedule:<name>, P:schedules, P:schedules-due.
-- ARGV[2]  name
-- Returns 1 when there was such a schedule, else 0.

local name = ARGV[2]
redis.call('ZREM', key('schedules'), name)
redis.call('ZREM', key('schedules_due'), name)
return redis.call('DEL', key('schedule', name))
