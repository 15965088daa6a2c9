-- finish.lua: job_finish_many (semantics.md rule 4), fenced by lease token, the batch in one call.
--
-- Keys: P:job:<id>, P:idx:<state>:<queue>, P:running, P:finished:<state>, P:waiting:<kind>:<queue>
--   (a retry), P:ready:<kind>:<queue> (a release); a chained job's keys as in insert_many.lua (P:seq,
--   P:jobs, P:idem, P:queues...); publishes on P:wake.
-- ARGV[2]  n, then per item 7 values: job id, lease token, outcome (completed / failed / cancelled /
--          released), result JSON, error JSON ('' = none), retry delay in µs, retryable ('1' / '0')
-- Returns the state recorded for each item, in order, or '' when the lease was lost (no change).

local woken, out, i = {}, {}, 3

local function record(j, outcome, result, err, delay, retryable)
  if outcome == 'completed' then
    finish_final(j, 'completed', 'on_success_spec', woken, {'result', result})
  elseif outcome == 'failed' then
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

for _ = 1, tonumber(ARGV[2]) do
  local id, token = ARGV[i], ARGV[i + 1]
  local j = load(id)
  -- A job listed twice is finished once: the second item finds it no longer running.
  if not j or j.state ~= 'running' or j.lease_token ~= token then
    out[#out + 1] = ''
  else
    unindex(j)
    clear_lease(j)
    record(j, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6])
    out[#out + 1] = j.state
  end
  i = i + 7
end
publish(woken, '')
return out
