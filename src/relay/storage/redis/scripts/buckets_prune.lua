-- buckets_prune.lua: rate_buckets_prune: delete the token buckets that are full again (a full bucket
-- is the same as none) and those whose limit is gone.
--
-- Keys: P:queues (every known queue: buckets only exist for queues that had limits, which registers
--   them), P:limits (read), P:buckets:<queue>.
-- No arguments of its own. Returns how many buckets were deleted.

local deleted = 0
for _, queue in ipairs(redis.call('HKEYS', key('queues'))) do
  local buckets = key1('buckets', queue)
  local stored = redis.call('HGETALL', buckets)
  if #stored > 0 then
    local limits = queue_limits(queue) or {}
    local doomed = {}
    for x = 1, #stored, 2 do
      local rate = bucket_limit(limits, stored[x])
      if not rate or bucket_tokens(stored[x + 1], rate) >= rate[2] then
        doomed[#doomed + 1] = stored[x]
      end
    end
    for x = 1, #doomed, BATCH_CHUNK do
      redis.call('HDEL', buckets, unpack(doomed, x, math.min(x + BATCH_CHUNK - 1, #doomed)))
    end
    deleted = deleted + #doomed
  end
end
return deleted
