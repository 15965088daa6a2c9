-- reap.lua: job_reap_expired (semantics.md rule 6).
--
-- Keys: P:running (leases ending strictly before now), P:job:<id>, P:idx:<state>:<queue>,
--   P:ready:<kind>:<queue>, P:finished:<state>; an on_failure job's keys as in insert_many.lua;
--   publishes on P:wake.
-- ARGV[2]  the LeaseExpired message as a JSON string literal (quoted and escaped by the caller)
-- Returns {requeued ids, dead ids, cancelled ids}, each in insertion order.

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
  add_error(j.id, '{"attempt":' .. fmt(j.attempt) .. ',"type":"LeaseExpired","message":' .. ARGV[2] ..
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
publish(woken, '')
return {requeued, dead, cancelled}
