-- queue_set_paused.lua: queue_pause / queue_resume (semantics.md rule 17).
--
-- Keys: P:queues (the flag; an unknown queue becomes known); publishes on P:wake at a resume.
-- ARGV[2]  queue name
-- ARGV[3]  '1' to pause, '0' to resume
-- Returns 0.

redis.call('HSET', key('queues'), ARGV[2], ARGV[3])
if ARGV[3] == '0' then
  publish({[ARGV[2]] = true}, '') -- its waiting jobs may be claimed again
end
return 0
