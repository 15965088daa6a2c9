-- schedule_list.lua: schedule_list and schedule_due, read only.
--
-- Keys: P:schedules (every name, score 0: by name) or P:schedules-due (by next_run_at, then name),
--   P:schedule:<name> of each.
-- ARGV[2]  '' for every schedule, or the most due schedules to return (schedules not paused whose
--          next run is at or before now)
-- Returns {now, name, record, name, record, ...}: now in µs, each record as HGETALL gives it.

local names
if ARGV[2] == '' then
  names = redis.call('ZRANGE', key('schedules'), 0, -1)
else
  names = redis.call('ZRANGEBYSCORE', key('schedules_due'), '-inf', NOW_S, 'LIMIT', 0, tonumber(ARGV[2]))
end
local out = {NOW_S}
for _, name in ipairs(names) do
  local record = redis.call('HGETALL', key('schedule', name))
  if #record > 0 then
    out[#out + 1] = name
    out[#out + 1] = record
  end
end
return out
