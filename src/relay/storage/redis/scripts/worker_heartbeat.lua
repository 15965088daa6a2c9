-- worker_heartbeat.lua: worker_heartbeat (semantics.md rule 18): register or refresh a worker.
--
-- Keys: P:workers (hash: worker id -> WorkerInfo JSON, see relay.storage.redis.codec).
-- ARGV[2]  worker id
-- ARGV[3]  its WorkerInfo as JSON
-- Returns 0.

redis.call('HSET', key('workers'), ARGV[2], ARGV[3])
return 0
