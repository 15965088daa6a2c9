-- worker_remove.lua: worker_remove (semantics.md rule 18); a missing id is no error.
--
-- Keys: P:workers.
-- ARGV[2]  worker id
-- Returns 0.

redis.call('HDEL', key('workers'), ARGV[2])
return 0
