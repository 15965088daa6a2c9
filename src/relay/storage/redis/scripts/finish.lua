-- finish.lua: job_finish_many (semantics.md rule 4), fenced by lease token, the batch in one call.
--
-- Keys: P:job:<id>, P:idx:<state>:<queue>, P:running, P:finished:<state>, P:waiting:<kind>:<queue>
--   (a retry), P:ready:<kind>:<queue> (a release); a chained job's keys as in insert_many.lua (P:seq,
--   P:idem, P:queues...); publishes on P:wake.
-- ARGV[2]  n, then per item 7 values: job id, lease token, outcome (completed / failed / cancelled /
--          released), result JSON, error JSON ('' = none), retry delay in µs, retryable ('1' / '0')
-- Returns the state recorded for each item, in order, or '' when the lease was lost (no change).
--
-- Cost per completed job: one HMGET, one HSET, one HDEL; the sorted sets get one command per key for
-- the whole batch.

local woken, out, i = {}, {}, 3
local finished_completed = key1('finished', 'completed')

-- The common outcome, with only the fields it needs.
local function complete(id, token, result)
  local k = job_key(id)
  local v = redis.call('HMGET', k, 'state', 'lease_token', 'queue', 'seq', 'on_success_spec')
  if v[1] ~= 'running' or v[2] ~= token then
    return ''
  end
  redis.call('HSET', k, 'state', 'completed', 'updated_at', NOW_S, 'finished_at', NOW_S, 'result', result)
  redis.call('HDEL', k, 'lease_token', 'lease_expires_at')
  zrem(RUNNING_KEY, id)
  zrem(key2('idx', 'running', v[3]), id)
  zadd(key2('idx', 'completed', v[3]), v[4], id)
  zadd(finished_completed, NOW_S, id)
  insert_chain(v[5], id, woken)
  return 'completed'
end

local function record(j, outcome, err, delay, retryable)
  if j.cancel_requested and (outcome == 'failed' or outcome == 'released') then
    -- An operator asked to cancel it: a failure or a release on its way out must not run it again.
    outcome = 'cancelled'
  end
  if outcome == 'failed' then
    add_error(j.id, err)
    if retryable == '1' and j.attempt <= j.max_retries then
      j.state = 'failed'
      j.run_at = NOW + tonumber(delay)
      store(j, nil)
    else
      finish_final(j, 'dead', 'on_failure_spec', woken)
    end
  elseif outcome == 'cancelled' then
    add_error(j.id, err)
    finish_final(j, 'cancelled', nil, woken)
  else
    -- Released at shutdown: the attempt did not happen, as far as retries are concerned.
    j.state = 'pending'
    store(j, {'attempt', fmt(j.attempt - 1)})
    woken[j.queue] = true
  end
end

begin_batch()
for _ = 1, tonumber(ARGV[2]) do
  local id, token, outcome = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  -- A job listed twice is finished once: the second item finds it no longer running.
  if outcome == 'completed' then
    out[#out + 1] = complete(id, token, ARGV[i + 3])
  else
    local j = load(id)
    if not j or j.state ~= 'running' or j.lease_token ~= token then
      out[#out + 1] = ''
    else
      unindex(j)
      clear_lease(j)
      record(j, outcome, ARGV[i + 4], ARGV[i + 5], ARGV[i + 6])
      out[#out + 1] = j.state
    end
  end
  i = i + 7
end
flush_batch()
publish(woken, '')
return out
