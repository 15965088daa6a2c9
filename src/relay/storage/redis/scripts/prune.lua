-- prune.lua: job_prune (semantics.md rule 8): retention of finished jobs, oldest first.
--
-- Keys: P:finished:<state> (read by finished_at), then for each job deleted: P:job:<id>,
--   P:logs:<id>, P:idem, P:idx:<state>:<queue>.
-- ARGV[2]  finished before (µs, exclusive)
-- ARGV[3]  limit (> 0)
-- ARGV[4…] states (count-prefixed)
-- Returns how many jobs were deleted.

local before, limit = ARGV[2], tonumber(ARGV[3])
local states = argv_list(4)
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
local n = math.min(#found, limit)
begin_batch()
for x = 1, n do
  local j = load(found[x].id)
  if j then
    delete_job(j)
  end
end
flush_batch()
return n
