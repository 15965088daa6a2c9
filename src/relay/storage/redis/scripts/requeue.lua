-- requeue.lua: job_requeue (semantics.md rule 13): dead / failed / cancelled jobs back to pending.
--
-- Keys: P:job:<id>, P:queues (every known queue, for a bulk requeue without a queue),
--   P:idx:<state>:<queue>, P:finished:<state> or P:waiting:<kind>:<queue>, P:ready:<kind>:<queue>;
--   with an ordering key P:heads:<queue> and P:held:<n>:<queue>:<key>; a workflow's step coming
--   back from a final state: P:run:<id> (its graph read, its cancelled flag cleared) and the jobs of
--   the run's other steps (read; those its failure cancelled come back too); publishes on P:wake.
-- ARGV[2]  job id, or '' for a bulk requeue
-- ARGV[3]  bulk: the queue, or '' for every queue
-- ARGV[4…] bulk: states (count-prefixed; the caller checked they are requeueable)
-- Returns {'missing'}, {'invalid', state}, or {'ok', id, read_job(), id, read_job()...} of the requeued
--   jobs by seq.
-- The attempt count and the errors stay: a requeued dead job gets exactly one more attempt. A job of
-- an ordering key that has another head waits behind it (held); the head itself (a failed job, or a
-- dead one under ordering_dead=block) stays the head. A workflow's step follows
-- workflow_rules.to_retry (requeue_job in _lib.lua): the steps its failure cancelled come back with it,
-- and it comes back held while a step it depends on stays failed.
-- One call requeues every matching job (it returns them all): millions at once would hold Redis for
-- seconds.

local REQUEUEABLE = {dead = true, failed = true, cancelled = true}

-- Ids of the jobs in `states` (a list) of `queues` (a list; empty: every known queue), by seq.
local function jobs_in(states, queues)
  if #queues == 0 then
    queues = redis.call('HKEYS', key('queues'))
  end
  local found = {}
  for _, queue in ipairs(queues) do
    for _, state in ipairs(states) do
      local members = redis.call('ZRANGE', key('idx', state, queue), 0, -1, 'WITHSCORES')
      for x = 1, #members, 2 do
        found[#found + 1] = {id = members[x], seq = tonumber(members[x + 1])}
      end
    end
  end
  table.sort(found, function(a, b) return a.seq < b.seq end)
  return found
end

local targets
if ARGV[2] ~= '' then
  local j = load(ARGV[2])
  if not j then
    return {'missing'}
  elseif not REQUEUEABLE[j.state] then
    return {'invalid', j.state}
  end
  targets = {{id = j.id}}
else
  targets = jobs_in(argv_list(4), ARGV[3] ~= '' and {ARGV[3]} or {})
end

local out, woken = {'ok'}, {}
begin_batch()
for _, target in ipairs(targets) do
  local j = load(target.id)
  -- A step that an earlier one of this call brought back with it (a workflow retry) is pending now,
  -- and stays as that retry left it.
  if REQUEUEABLE[j.state] then
    requeue_job(j, woken)
  end
  out[#out + 1] = j.id
  out[#out + 1] = read_job(j.id)
end
flush_batch()
publish(woken, '')
return out
