-- insert_many.lua: job_insert_many (semantics.md rule 1). All or nothing: every check runs first.
--
-- Keys: P:job:<id> (created, or read), P:idem (read, written), P:seq, P:jobs, P:queues,
--   P:idx:<state>:<queue>, P:ready:<kind>:<queue> or P:waiting:<kind>:<queue>; publishes on P:wake.
-- ARGV[2]  origin: the inserting storage instance (it wakes its own waiters itself, and skips this
--          message)
-- ARGV[3]  batch token, random per call: a call retried after its reply was lost finds its own jobs
--          (same ids, same token) and returns them as created instead of refusing their ids
-- ARGV[4]  the jobs: a JSON array of packed jobs (parse_spec in _lib.lua; the caller always chose
--          their ids). One JSON argument, not one argument per field: redis-py would spend more time
--          encoding tens of thousands of arguments than the script spends inserting.
-- Returns {'dup', id} when a client-chosen id is taken (nothing written), else {'ok', now, result...}
--   in batch order, a result being {'new', seq, state, run_at} for a job this call wrote (the caller
--   has the rest: it packed the job), or {'old', created 0/1, HGETALL} for a job that was there.

local origin, batch = ARGV[2], ARGV[3]
local specs = {}
for _, packed in ipairs(cjson.decode(ARGV[4])) do
  specs[#specs + 1] = parse_spec(packed, 1)
end

-- An existing job for this key: from the store, or planned earlier in this batch.
local planned_keys, planned_ids, seen_keys = {}, {}, {}
local function existing_for(s)
  if s.idem == '' then
    return nil
  end
  if planned_keys[s.idem] then
    return {id = planned_keys[s.idem], created = 0}
  end
  local id = redis.call('HGET', key('idem'), s.idem)
  if not id then
    return nil
  end
  -- Ours from a first try of this very call: created, once.
  local ours = not seen_keys[s.idem] and redis.call('HGET', key('job', id), 'batch') == batch
  seen_keys[s.idem] = true
  return {id = id, created = ours and 1 or 0}
end

local plan = {}
for n, s in ipairs(specs) do
  local found = existing_for(s)
  if found then
    plan[n] = found
  else
    if planned_ids[s.id] then
      return {'dup', s.id}
    end
    local taken = redis.call('EXISTS', key('job', s.id)) == 1
    if taken and redis.call('HGET', key('job', s.id), 'batch') ~= batch then
      return {'dup', s.id}
    end
    plan[n] = {id = s.id, created = 1, spec = (not taken) and s or nil}
    planned_ids[s.id] = true
    if s.idem ~= '' then
      planned_keys[s.idem] = s.id
    end
  end
end

-- In batch order: a later job with the key of an earlier one reads it after it was written.
local woken, out = {}, {'ok', NOW_S}
for _, p in ipairs(plan) do
  if p.spec then
    local j = write_job(p.spec, nil, batch)
    if j.state == 'pending' then
      woken[j.queue] = true
    end
    out[#out + 1] = {'new', fmt(j.seq), j.state, fmt(j.run_at)}
  else
    out[#out + 1] = {'old', p.created, redis.call('HGETALL', key('job', p.id))}
  end
end
publish(woken, origin)
return out
