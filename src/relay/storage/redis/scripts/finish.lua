-- finish.lua: job_finish_many (semantics.md rule 4), fenced by lease token, the batch in one call.
--
-- Keys: P:job:<id>, P:idx:<state>:<queue>, P:running, P:finished:<state>, P:waiting:<kind>:<queue>
--   (a retry), P:ready:<kind>:<queue> (a release); a chained job's keys as in insert_many.lua (P:seq,
--   P:idem, P:queues...); P:limits (read), P:conc:<n>:<queue>:<key> (the slot given back),
--   P:heads:<queue> and P:held:<n>:<queue>:<key> (the next job of an ordering key released); for a
--   workflow's step that ends, P:run:<id> (read) and the jobs of the run's other steps (read; those
--   released or cancelled written, as in workflows().step_ended in _lib.lua);
--   publishes on P:wake (chained and released jobs, and the queues whose concurrency slots freed).
-- ARGV[2]  origin: the finishing storage instance (it wakes its own waiters, see publish())
-- ARGV[3]  n, then per item 7 values: job id, lease token, outcome (completed / failed / cancelled /
--          released), result JSON, error JSON ('' = none), retry delay in µs, retryable ('1' / '0')
-- Returns {states, woken}: the state recorded for each item, in order, or '' when the lease was lost
--   (no change); the queues woken.
--
-- Cost per completed job: one HMGET, one HSET, one HDEL; the sorted sets get one command per key for
-- the whole batch; one HGET of P:limits per queue of the batch (is a slot someone's now?).

local woken, out, i = {}, {}, 4
local finished_completed = key1('finished', 'completed')

-- The common outcome, with only the fields it needs.
local function complete(id, token, result)
  local k = job_key(id)
  local v = redis.call('HMGET', k, 'state', 'lease_token', 'queue', 'seq', 'on_success_spec',
    'concurrency_key', 'ordering_key', 'workflow_run_id')
  if v[1] ~= 'running' or v[2] ~= token then
    return ''
  end
  local queue = v[3]
  redis.call('HSET', k, 'state', 'completed', 'updated_at', NOW_S, 'finished_at', NOW_S, 'result', result)
  redis.call('HDEL', k, 'lease_token', 'lease_expires_at')
  zrem(RUNNING_KEY, id)
  zrem(key2('idx', 'running', queue), id)
  zadd(key2('idx', 'completed', queue), v[4], id)
  zadd(finished_completed, NOW_S, id)
  if v[6] then -- what unindex() does for the other outcomes
    redis.call('SREM', conc_key(queue, v[6]), id)
  end
  slot_freed(queue, woken)
  if v[7] then
    leave_line({id = id, queue = queue, state = 'completed', ordering_key = v[7]}, woken)
  end
  insert_chain(v[5], id, woken)
  if v[8] then -- what finish_final() does for the other outcomes
    workflows().step_ended(id, v[8], woken)
  end
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
for _ = 1, tonumber(ARGV[3]) do
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
      slot_freed(j.queue, woken)
      clear_lease(j)
      record(j, outcome, ARGV[i + 4], ARGV[i + 5], ARGV[i + 6])
      out[#out + 1] = j.state
    end
  end
  i = i + 7
end
flush_batch()
return {out, publish(woken, ARGV[2])}
