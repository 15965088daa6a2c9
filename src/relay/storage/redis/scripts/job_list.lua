-- job_list.lua: one chunk of job_list (semantics.md rule 11), read only. The caller pages through
-- chunks, filters by text in Python (Unicode case folding), and builds the cursor.
--
-- Keys: P:idx:<state>:<queue> for each wanted pair (every state when none is given, every known
--   queue from P:queues when none is given); P:job:<id> of each job returned. Without any filter
--   that is 7 sets per queue: there is no set of every job, which each insert would pay for.
-- ARGV[2]  list below this seq ('' = from the newest)
-- ARGV[3]  chunk: how many jobs to look at, at most
-- ARGV[4…] states, queues, kinds (each count-prefixed; empty = no filter)
-- Returns {next, id, seq, read_job(), id, seq, read_job()...}: next is the seq to continue below, or ''
--   when no job below remains.
-- Newest first: every source gives its newest `chunk` below the cursor, and the merge keeps the
-- newest `chunk` of all; jobs of other kinds are then left out.

local before, chunk = ARGV[2], tonumber(ARGV[3])
local states, i = argv_list(4)
local queues, j = argv_list(i)
local kinds = argv_list(j)
local max = before == '' and '+inf' or '(' .. before

local sources = {}
if #states == 0 then
  states = STATES
end
if #queues == 0 then
  queues = redis.call('HKEYS', key('queues'))
end
for _, queue in ipairs(queues) do
  for _, state in ipairs(states) do
    sources[#sources + 1] = key('idx', state, queue)
  end
end

local found = {}
for _, source in ipairs(sources) do
  local page = redis.call('ZREVRANGEBYSCORE', source, max, '-inf', 'WITHSCORES', 'LIMIT', 0, chunk)
  for x = 1, #page, 2 do
    found[#found + 1] = {id = page[x], seq = tonumber(page[x + 1])}
  end
end
table.sort(found, function(a, b) return a.seq > b.seq end)

local wanted_kind = nil
if #kinds > 0 then
  wanted_kind = {}
  for _, kind in ipairs(kinds) do
    wanted_kind[kind] = true
  end
end
local out = {#found >= chunk and fmt(found[chunk].seq) or ''}
for x = 1, math.min(#found, chunk) do
  local k = job_key(found[x].id)
  if not wanted_kind or wanted_kind[redis.call('HGET', k, 'kind')] then
    out[#out + 1] = found[x].id
    out[#out + 1] = fmt(found[x].seq)
    out[#out + 1] = read_job(found[x].id)
  end
end
return out
