-- insert_many.lua: job_insert_many (semantics.md rule 1). All or nothing: every check runs first.
--
-- Keys: P:job:<id> (created, or read), P:idem (read, written), P:seq, P:queues,
--   P:idx:<state>:<queue>, P:ready:<kind>:<queue> or P:waiting:<kind>:<queue>, P:layout (set once);
--   publishes on P:wake.
-- ARGV[2]  origin: the inserting storage instance (it wakes its own waiters itself, and skips this
--          message)
-- ARGV[3]  batch token, random per call: a call retried after its reply was lost finds its own jobs
--          (same ids, same token) and returns them as created instead of refusing their ids
-- ARGV[4]  the layout version of relay.storage.redis.keys (stored once in P:layout)
-- ARGV[5]  the jobs: a JSON array of packed jobs (P_* in _lib.lua; the caller always chose their
--          ids). One JSON argument, not one argument per field: redis-py would spend more time
--          encoding tens of thousands of arguments than the script spends inserting.
-- Returns {'dup', id} when a client-chosen id is taken (nothing written), else {'ok', now, known}:
--   `known` lists the jobs this call did not write now, each {position in the batch (from 1),
--   created 0/1, id, read_job()}. Every other job was written as sent, at `now`: the caller builds those
--   from what it sent, so that a big insert does not read ten thousand jobs back.
--
-- Cost: one EXISTS and one or two HSETs per job; the sorted sets (the index, the ready or waiting
-- set), P:idem, P:seq and P:queues get one command per key for the whole batch.

local origin, batch, layout = ARGV[2], ARGV[3], ARGV[4]
local jobs = cjson.decode(ARGV[5])

-- An existing job for this key: from the store, or planned earlier in this batch.
local planned_keys, planned_ids, seen_keys = {}, {}, {}
local function existing_for(idem)
  if idem == '' then
    return nil
  end
  if planned_keys[idem] then
    return planned_keys[idem], 0
  end
  local id = redis.call('HGET', IDEM_KEY, idem)
  if not id then
    return nil
  end
  -- Ours from a first try of this very call: created, once.
  local ours = not seen_keys[idem] and redis.call('HGET', job_key(id), 'batch') == batch
  seen_keys[idem] = true
  return id, ours and 1 or 0
end

-- `fresh` and `fresh_keys`: the jobs to write and their hash keys, in batch order.
local known, fresh, fresh_keys = {}, {}, {}
for n, p in ipairs(jobs) do
  local idem = p[P_IDEM]
  local found, created = existing_for(idem)
  if found then
    known[#known + 1] = {n, created, found}
  else
    local id = p[P_ID]
    if planned_ids[id] then
      return {'dup', id}
    end
    local k = job_key(id)
    local taken = redis.call('EXISTS', k) == 1
    if taken and redis.call('HGET', k, 'batch') ~= batch then
      return {'dup', id}
    end
    planned_ids[id] = true
    if idem ~= '' then
      planned_keys[idem] = id
    end
    if taken then
      known[#known + 1] = {n, 1, id} -- written by a first try of this call
    else
      fresh[#fresh + 1] = p
      fresh_keys[#fresh_keys + 1] = k
    end
  end
end

local woken = {}
local count = #fresh
if count > 0 then
  redis.call('SETNX', key('layout'), layout)
  begin_batch()
  -- Seqs in batch order: one INCRBY for the batch.
  local seq = redis.call('INCRBY', key('seq'), count) - count
  local queues, idems, ni = {}, {}, 0
  for x, p in ipairs(fresh) do
    local id, queue = p[P_ID], p[P_QUEUE]
    if write_job(p, fresh_keys[x], id, seq + x, 'batch', batch) == 'pending' then
      woken[queue] = true
    end
    queues[queue] = true
    if p[P_IDEM] ~= '' then
      idems[ni + 1], idems[ni + 2], ni = p[P_IDEM], id, ni + 2
    end
  end
  for x = 1, ni, 2 * BATCH_CHUNK do
    redis.call('HSET', IDEM_KEY, unpack(idems, x, math.min(x + 2 * BATCH_CHUNK - 1, ni)))
  end
  for queue in pairs(queues) do
    redis.call('HSETNX', key('queues'), queue, '0')
  end
  flush_batch()
end

-- Read after the writes: a later job with the key of an earlier one of this batch reads it as written.
for _, k in ipairs(known) do
  k[4] = read_job(k[3])
end
publish(woken, origin)
return {'ok', NOW_S, known}
