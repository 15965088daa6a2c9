-- workflow_list.lua: workflow_list (read only): runs newest first, a page at a time.
--
-- Keys: P:runs, or P:runs-of:<workflow> (run ids by seq); each run listed as in workflow_read.lua.
-- ARGV[2]  '1': only the runs of workflow ARGV[3]; '0': every run
-- ARGV[3]  the workflow's name
-- ARGV[4]  the seq to list below (exclusive; a page's cursor), or '' for the newest
-- ARGV[5]  limit (> 0)
-- Returns {more (1 / 0), id, read, id, read...}: up to `limit` runs, newest first; read is
--   workflows().read(). The seqs of runs never change, so a cursor stays stable while runs start.

local k = ARGV[2] == '1' and key('runs_of', ARGV[3]) or key('runs')
local below = ARGV[4] == '' and '+inf' or '(' .. ARGV[4]
local limit = tonumber(ARGV[5])
local ids = redis.call('ZREVRANGEBYSCORE', k, below, '-inf', 'LIMIT', 0, limit + 1)
local wf, out = workflows(), {#ids > limit and 1 or 0}
for x = 1, math.min(#ids, limit) do
  out[#out + 1] = ids[x]
  out[#out + 1] = wf.read(ids[x])
end
return out
