-- heartbeat.lua: job_heartbeat_many (semantics.md rule 3), fenced by lease token.
--
-- Keys: P:job:<id> (lease_expires_at, progress, checkpoint), P:running (the new lease expiry).
-- ARGV[2]  n, then per item 5 values: job id, lease token, progress ('' keeps the stored one),
--          save checkpoint ('1' stores the next value, '0' keeps the stored one), checkpoint JSON
-- Returns one code per item: 0 lost (nothing changed), 1 extended, 2 extended and cancel requested.
-- updated_at stays: it tells when the job last changed state, and heartbeats come every few seconds.

local out, i = {}, 3
begin_batch()
for _ = 1, tonumber(ARGV[2]) do
  local id, token, progress, save, checkpoint = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  local k = job_key(id)
  local v = redis.call('HMGET', k, 'state', 'lease_token', 'lease_us', 'cancel_requested')
  if v[1] ~= 'running' or v[2] ~= token then
    out[#out + 1] = 0
  else
    local expires = fmt(NOW + tonumber(v[3]))
    local args = {k, 'lease_expires_at', expires}
    if progress ~= '' then
      args[#args + 1] = 'progress'
      args[#args + 1] = progress
    end
    if save == '1' then
      args[#args + 1] = 'checkpoint'
      args[#args + 1] = checkpoint
    end
    redis.call('HSET', unpack(args))
    zadd(RUNNING_KEY, expires, id)
    out[#out + 1] = v[4] == '1' and 2 or 1
  end
end
flush_batch()
return out
