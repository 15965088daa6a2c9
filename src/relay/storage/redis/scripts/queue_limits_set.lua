-- queue_limits_set.lua: queue_limits_set: replace a queue's limits, and wake its workers.
--
-- Keys: P:queues (an unknown queue becomes known), P:limits, P:buckets:<queue> (each bucket refilled
--   to now under the new limit and cut to its burst); publishes on P:wake.
-- ARGV[2]  origin: the storage instance setting them (it wakes its own waiters, see publish())
-- ARGV[3]  queue name
-- ARGV[4]  the limits as JSON (relay.storage.redis.codec.limits_json), or '' for none (NO_LIMITS)
-- Returns 0.
-- A bucket whose limit is gone keeps its state until rate_buckets_prune deletes it. The buckets of a
-- queue are read whole (HGETALL): a queue with a key_rate has one per rate key not full again, which
-- the pruner keeps few.

local queue, raw = ARGV[3], ARGV[4]
redis.call('HSETNX', key('queues'), queue, '0')
if raw == '' then
  redis.call('HDEL', key('limits'), queue)
else
  redis.call('HSET', key('limits'), queue, raw)
  local limits = cjson.decode(raw)
  local buckets = key1('buckets', queue)
  local stored = redis.call('HGETALL', buckets)
  local args = {buckets}
  for x = 1, #stored, 2 do
    local rate = bucket_limit(limits, stored[x])
    if rate then
      args[#args + 1] = stored[x]
      args[#args + 1] = bucket_text(bucket_tokens(stored[x + 1], rate))
    end
  end
  for x = 2, #args, 2 * BATCH_CHUNK do
    redis.call('HSET', buckets, unpack(args, x, math.min(x + 2 * BATCH_CHUNK - 1, #args)))
  end
end
publish({[queue] = true}, ARGV[2]) -- looser limits may let waiting jobs through
return 0
