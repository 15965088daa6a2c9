-- claim.lua: job_claim (semantics.md rule 2). One call claims up to `limit` jobs atomically.
--
-- Keys: P:queues (paused flags), P:waiting:<kind>:<queue> (due jobs promoted first),
--   P:ready:<kind>:<queue> (read, then the claimed members removed), P:job:<id>,
--   P:idx:<state>:<queue>, P:running.
-- ARGV[2]  worker id
-- ARGV[3]  limit (> 0; the caller returns [] for less)
-- ARGV[4]  lease token base: 24 random hex digits from the caller; each job's token is the base plus
--          its position as 8 hex digits, so tokens are fresh per claim without randomness in Lua
-- ARGV[5…] queues (count-prefixed), then kinds (count-prefixed)
-- Returns the HGETALL of each claimed job, in claim order: priority DESC, run_at, seq.

local worker_id, limit, token_base = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local queues, i = argv_list(5)
local kinds = argv_list(i)

-- The first `limit` due members of one ready set (a pending job due later is skipped: it only
-- exists when the clock went back).
local function collect(k, into)
  local offset, taken = 0, 0
  while taken < limit do
    local page = redis.call('ZRANGE', k, offset, offset + limit - 1, 'WITHSCORES')
    if #page == 0 then
      return
    end
    for x = 1, #page, 2 do
      local member = page[x]
      local run_at = tonumber(string.sub(member, 1, 16))
      if run_at <= NOW and taken < limit then
        into[#into + 1] = {score = tonumber(page[x + 1]), run_at = run_at,
          seq = tonumber(string.sub(member, 17, 32)), id = string.sub(member, 33)}
        taken = taken + 1
      end
    end
    offset = offset + limit
  end
end

local candidates, seen_queues, seen_kinds = {}, {}, {}
for _, kind in ipairs(kinds) do
  seen_kinds[kind] = true
end
for _, queue in ipairs(queues) do
  if not seen_queues[queue] and redis.call('HGET', key('queues'), queue) ~= '1' then
    for kind in pairs(seen_kinds) do
      promote_due(kind, queue)
      collect(key('ready', kind, queue), candidates)
    end
  end
  seen_queues[queue] = true
end

table.sort(candidates, function(a, b)
  if a.score ~= b.score then
    return a.score < b.score
  elseif a.run_at ~= b.run_at then
    return a.run_at < b.run_at
  end
  return a.seq < b.seq
end)

local out = {}
for n = 1, math.min(limit, #candidates) do
  local j = load(candidates[n].id)
  unindex(j)
  j.state = 'running'
  j.lease_expires_at = NOW + j.lease_us
  -- The attempt is counted here, at claim, so a job that kills its worker still runs out of retries.
  store(j, {'attempt', fmt(j.attempt + 1), 'lease_token', token_base .. string.format('%08x', n),
    'started_at', NOW_S, 'worker_id', worker_id})
  out[#out + 1] = redis.call('HGETALL', key('job', j.id))
end
return out
