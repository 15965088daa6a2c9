-- purge.lua: one chunk of job_purge (semantics.md rule 14): delete jobs (and their logs) in some
-- states. The caller calls again while a chunk comes back full, so that purging a dead-letter queue of
-- millions never blocks Redis in one long script.
--
-- Keys: P:queues (every known queue, when no queue is given), P:idx:<state>:<queue>, and for each
--   job deleted: P:job:<id>, P:logs:<id>, P:idem, its state's structure.
-- ARGV[2]  the queue, or '' for every queue
-- ARGV[3]  chunk: how many jobs to delete at most
-- ARGV[4…] states (count-prefixed; the caller refused running)
-- Returns how many jobs were deleted.

local chunk = tonumber(ARGV[3])
local states = argv_list(4)
local queues = ARGV[2] ~= '' and {ARGV[2]} or redis.call('HKEYS', key('queues'))
local deleted = 0
-- Each index is read once, before any of its jobs is deleted: the batched writes may wait.
begin_batch()
for _, queue in ipairs(queues) do
  for _, state in ipairs(states) do
    if deleted >= chunk then
      flush_batch()
      return deleted
    end
    for _, id in ipairs(redis.call('ZRANGE', key('idx', state, queue), 0, chunk - deleted - 1)) do
      delete_job(load(id))
      deleted = deleted + 1
    end
  end
end
flush_batch()
return deleted
