-- promote.lua: job_promote_due (semantics.md rule 7). Claims promote their own queues already; this
-- keeps listings and counts honest for queues nobody claims from.
--
-- Keys: P:queues (every known queue), P:waiting:<kind>:<queue>, P:ready:<kind>:<queue>, P:job:<id>,
--   P:idx:<state>:<queue>; publishes on P:wake.
-- No arguments of its own. Returns how many jobs became pending.

local woken, count = {}, 0
begin_batch()
for _, queue in ipairs(redis.call('HKEYS', key('queues'))) do
  for _, kind in ipairs(KINDS) do
    local n = promote_due(kind, queue)
    if n > 0 then
      count = count + n
      woken[queue] = true
    end
  end
end
flush_batch()
publish(woken, '')
return count
