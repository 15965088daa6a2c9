-- leader_elect.lua: leader_elect (semantics.md rule 9), judged by the storage clock.
--
-- Keys: P:leader:<name> (hash: holder, expires_at in µs).
-- ARGV[2]  leadership name
-- ARGV[3]  holder
-- ARGV[4]  term (ttl) in µs
-- Returns 1 when ARGV[3] holds the leadership now, else 0.
-- The key also gets a Redis TTL of twice the term plus a minute, by the server's clock: only to
-- collect leaderships nobody renews. The decision itself always reads expires_at.

local k = key('leader', ARGV[2])
local held = redis.call('HMGET', k, 'holder', 'expires_at')
if held[1] and held[1] ~= ARGV[3] and tonumber(held[2]) > NOW then
  return 0
end
redis.call('HSET', k, 'holder', ARGV[3], 'expires_at', fmt(NOW + tonumber(ARGV[4])))
redis.call('PEXPIRE', k, fmt(math.floor(2 * tonumber(ARGV[4]) / 1000) + 60000))
return 1
