-- logs_read.lua: job_logs (semantics.md rule 15), read only.
--
-- Keys: P:logs:<id>.
-- ARGV[2]  job id
-- ARGV[3]  after seq: only lines with a greater seq
-- ARGV[4]  attempt, or '' for every attempt
-- ARGV[5]  limit (> 0)
-- Returns the stored lines ("seq\tattempt\tat\tstream\ttext"), by seq.
-- A job's lines are contiguous in seq (log_append.lua), so the first wanted line is found by
-- arithmetic from the first kept line, not by a scan.

local k = key('logs', ARGV[2])
local after, attempt, limit = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local first = redis.call('LINDEX', k, 0)
if not first then
  return {}
end
local start = math.max(0, after - tonumber(string.match(first, '^(%d+)')) + 1)
local out, page_size = {}, 1000
while #out < limit do
  local page = redis.call('LRANGE', k, start, start + page_size - 1)
  if #page == 0 then
    break
  end
  for _, line in ipairs(page) do
    if #out < limit and (attempt == '' or string.match(line, '^%d+\t(%-?%d+)\t') == attempt) then
      out[#out + 1] = line
    end
  end
  start = start + page_size
end
return out
