-- prune.lua: job_prune (semantics.md rule 8): retention of finished jobs, oldest first.
--
-- Keys: P:finished:<state> (read by finished_at), then for each job deleted: P:job:<id>,
--   P:logs:<id>, P:idem, P:idx:<state>:<queue>; P:heads:<queue> and P:held:<n>:<queue>:<key> (a
--   dead job that held its ordering key releases the next); publishes on P:wake.
-- ARGV[2]  origin: the pruning storage instance (it wakes its own waiters, see publish())
-- ARGV[3]  finished before (µs, exclusive)
-- ARGV[4]  limit (> 0)
-- ARGV[5…] states (count-prefixed)
-- Returns {how many jobs were deleted, queues woken}.

local before, limit = ARGV[3], tonumber(ARGV[4])
local states = argv_list(5)
local found = {}
for _, state in ipairs(states) do
  local page = redis.call('ZRANGEBYSCORE', key('finished', state), '-inf', '(' .. before, 'WITHSCORES',
    'LIMIT', 0, limit)
  for x = 1, #page, 2 do
    found[#found + 1] = {id = page[x], at = tonumber(page[x + 1])}
  end
end
table.sort(found, function(a, b)
  if a.at ~= b.at then
    return a.at < b.at
  end
  return a.id < b.id
end)
local n, woken = math.min(#found, limit), {}
begin_batch()
for x = 1, n do
  local j = load(found[x].id)
  if j then
    delete_job(j, woken)
  end
end
flush_batch()
return {n, publish(woken, ARGV[2])}
