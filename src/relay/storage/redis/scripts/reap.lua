-- reap.lua: job_reap_expired (semantics.md rule 6).
--
-- Keys: P:running (leases ending strictly before now), P:job:<id>, P:idx:<state>:<queue>,
--   P:ready:<kind>:<queue>, P:finished:<state>; an on_failure job's keys as in insert_many.lua;
--   P:limits (read), P:conc:<n>:<queue>:<key>, P:heads:<queue>, P:held:<n>:<queue>:<key> (as in
--   finish.lua); a workflow's step that ends: its run's keys as in finish.lua; publishes on P:wake.
-- ARGV[2]  origin: the reaping storage instance (it wakes its own waiters, see publish())
-- ARGV[3]  the LeaseExpired message as a JSON string literal (quoted and escaped by the caller)
-- Returns {requeued ids, dead ids, cancelled ids, queues woken}, the ids in insertion order.

local ids = redis.call('ZRANGEBYSCORE', key('running'), '-inf', '(' .. NOW_S)
local jobs = {}
for _, id in ipairs(ids) do
  local j = load(id)
  if j then
    jobs[#jobs + 1] = j
  else
    redis.call('ZREM', key('running'), id) -- an index entry without its job: drop it
  end
end
table.sort(jobs, function(a, b) return a.seq < b.seq end)

local requeued, dead, cancelled, woken = {}, {}, {}, {}
begin_batch()
for _, j in ipairs(jobs) do
  unindex(j)
  slot_freed(j.queue, woken)
  add_error(j.id, '{"attempt":' .. fmt(j.attempt) .. ',"type":"LeaseExpired","message":' .. ARGV[3] ..
    ',"at_us":' .. NOW_S .. '}')
  clear_lease(j)
  if j.cancel_requested then
    finish_final(j, 'cancelled', nil, woken)
    cancelled[#cancelled + 1] = j.id
  elseif j.attempt <= j.max_retries then
    j.state = 'pending'
    j.run_at = NOW
    store(j, nil)
    woken[j.queue] = true
    requeued[#requeued + 1] = j.id
  else
    finish_final(j, 'dead', 'on_failure_spec', woken)
    dead[#dead + 1] = j.id
  end
end
flush_batch()
return {requeued, dead, cancelled, publish(woken, ARGV[2])}
