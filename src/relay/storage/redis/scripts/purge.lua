-- purge.lua: one chunk of job_purge (semantics.md rule 14): delete jobs (and their logs) in some
-- states. The caller calls again while a chunk comes back full, so that purging a dead-letter queue of
-- millions never blocks Redis in one long script.
--
-- Keys: P:queues (every known queue, when no queue is given), P:idx:<state>:<queue>, and for each
--   job deleted: P:job:<id>, P:logs:<id>, P:idem, its state's structure; P:heads:<queue> and
--   P:held:<n>:<queue>:<key> (a deleted head releases its key's next job); publishes on P:wake.
-- ARGV[2]  origin: the purging storage instance (it wakes its own waiters, see publish())
-- ARGV[3]  the queue, or '' for every queue
-- ARGV[4]  chunk: how many jobs to delete at most
-- ARGV[5…] states (count-prefixed; the caller refused running)
-- Returns {how many jobs were deleted, queues woken}.

local chunk = tonumber(ARGV[4])
local states = argv_list(5)
local queues = ARGV[3] ~= '' and {ARGV[3]} or redis.call('HKEYS', key('queues'))
local deleted, woken = 0, {}
-- Each index is read once, before any of its jobs is deleted: the batched writes may wait. (A job
-- released by a deleted head changes no index: it keeps its state.)
begin_batch()
for _, queue in ipairs(queues) do
  for _, state in ipairs(states) do
    if deleted >= chunk then
      break
    end
    for _, id in ipairs(redis.call('ZRANGE', key('idx', state, queue), 0, chunk - deleted - 1)) do
      delete_job(load(id), woken)
      deleted = deleted + 1
    end
  end
end
flush_batch()
return {deleted, publish(woken, ARGV[2])}
