-- log_append.lua: job_log_append (semantics.md rule 5).
--
-- Keys: P:job:<id> (its log_seq counter), P:logs:<id> (RPUSH, then LTRIM to the cap).
-- ARGV[2]  the cap: lines kept per job (the oldest are dropped first)
-- ARGV[3]  n, then per line 4 values: job id, attempt, stream, text
-- Each line is stored as "seq\tattempt\tat\tstream\ttext"; seq increases by one per line of a job, so
-- the lines of a list are contiguous in seq (logs_read.lua relies on it). Lines of a job that is not
-- stored (pruned meanwhile) are dropped: logs are only ever deleted with their job.

local cap, touched, i = tonumber(ARGV[2]), {}, 4
for _ = 1, tonumber(ARGV[3]) do
  local id, attempt, stream, text = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  local k = job_key(id)
  if redis.call('EXISTS', k) == 1 then
    local seq = redis.call('HINCRBY', k, 'log_seq', 1)
    local line = fmt(seq) .. '\t' .. attempt .. '\t' .. NOW_S .. '\t' .. stream .. '\t' .. text
    redis.call('RPUSH', key('logs', id), line)
    touched[id] = true
  end
end
for id in pairs(touched) do
  redis.call('LTRIM', key('logs', id), -cap, -1)
end
return 0
