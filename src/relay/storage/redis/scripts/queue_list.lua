-- queue_list.lua: queue_list (semantics.md rule 16), read only; counts never scan jobs.
--
-- Keys: P:queues, P:idx:<state>:<queue> (ZCARD), P:ready:<kind>:<queue> (oldest pending run_at),
--   P:limits, P:buckets:<queue> (the queue-wide bucket, field '').
-- No arguments of its own.
-- Returns {now, rows}: the storage time (µs; the queue-wide buckets are refilled to it by the caller)
--   and per known queue (unsorted): {name, paused '1'/'0', seven counts in the order of STATES,
--   oldest pending run_at in µs or '', limits JSON or '', queue-wide bucket or ''}.
-- Held jobs count as pending (they are in idx:pending), but the oldest pending run_at is that of the
-- claimable ones: held jobs are in no ready set.
-- The oldest pending job: a ready set is ordered by priority, then run_at, so the first member of
-- each priority holds that priority's oldest run_at; the walk takes one step per distinct priority.

local function oldest_in(k, best)
  local first = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
  while #first > 0 do
    local run_at = tonumber(string.sub(first[1], 1, 16))
    if not best or run_at < best then
      best = run_at
    end
    first = redis.call('ZRANGEBYSCORE', k, '(' .. first[2], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  end
  return best
end

local out = {}
local flags = redis.call('HGETALL', key('queues'))
for x = 1, #flags, 2 do
  local queue = flags[x]
  local row = {queue, flags[x + 1]}
  for _, state in ipairs(STATES) do
    row[#row + 1] = redis.call('ZCARD', key('idx', state, queue))
  end
  local best = nil
  for _, kind in ipairs(KINDS) do
    best = oldest_in(key('ready', kind, queue), best)
  end
  row[#row + 1] = best and fmt(best) or ''
  row[#row + 1] = redis.call('HGET', key('limits'), queue) or ''
  row[#row + 1] = redis.call('HGET', key1('buckets', queue), '') or ''
  out[#out + 1] = row
end
return {NOW_S, out}
