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
-- Returns {id, read_job(), id, read_job(), ...} of the claimed jobs, in claim order: priority DESC,
--   run_at, seq.
--
-- Cost per claimed job: one HMGET and one HSET; the sorted sets (ready, index, running) get one
-- command per key for the whole claim.

local worker_id, limit, token_base = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local queues, i = argv_list(5)
local kinds = argv_list(i)

-- The ready set of (kind, queue) as a source of candidates: its first `limit` due members, in its
-- order (a pending job due later is skipped: it only exists when the clock went back). `prefix`: the
-- members taken are its first ranks (none skipped before them), so that one ZREMRANGEBYRANK removes
-- the claimed ones.
local function collect(kind, queue)
  local k = key2('ready', kind, queue)
  local src = {ready = k, pending = key2('idx', 'pending', queue), running = key2('idx', 'running', queue),
    members = {}, scores = {}, prefix = true, claimed = 0}
  local members, scores, offset, skipped = src.members, src.scores, 0, false
  while #members < limit do
    local page = redis.call('ZRANGE', k, offset, offset + limit - 1, 'WITHSCORES')
    if #page == 0 then
      break
    end
    for x = 1, #page, 2 do
      local member = page[x]
      if tonumber(string.sub(member, 1, 16)) > NOW then
        skipped = true
      elseif #members < limit then
        members[#members + 1] = member
        scores[#scores + 1] = tonumber(page[x + 1])
        src.prefix = src.prefix and not skipped
      end
    end
    offset = offset + limit
  end
  return src
end

local sources, seen_kinds, seen_queues = {}, {}, {}
for _, kind in ipairs(kinds) do
  seen_kinds[kind] = true
end
local wanted = {}
for _, queue in ipairs(queues) do
  if not seen_queues[queue] and redis.call('HGET', key('queues'), queue) ~= '1' then
    for kind in pairs(seen_kinds) do
      wanted[#wanted + 1] = {kind, queue}
    end
  end
  seen_queues[queue] = true
end

begin_batch()
local promoted = 0
for _, w in ipairs(wanted) do
  promoted = promoted + promote_due(w[1], w[2])
end
if promoted > 0 then
  flush_batch() -- the ready sets are read next
  begin_batch()
end

-- Candidates {source, member}, in claim order. One source (a worker of one queue and one kind) is in
-- that order already; several are merged: by score (-priority), then member (run_at, seq).
local candidates = {}
for _, w in ipairs(wanted) do
  local src = collect(w[1], w[2])
  for x, member in ipairs(src.members) do
    candidates[#candidates + 1] = {src, member, src.scores[x]}
  end
  if #src.members > 0 then
    sources[#sources + 1] = src
  end
end
if #sources > 1 then
  table.sort(candidates, function(a, b)
    if a[3] ~= b[3] then
      return a[3] < b[3]
    end
    return string.sub(a[2], 1, 32) < string.sub(b[2], 1, 32)
  end)
end

local out, claimed, expiry = {}, 0, {}
for n = 1, math.min(limit, #candidates) do
  local src, member = candidates[n][1], candidates[n][2]
  local id, seq = string.sub(member, 33), string.sub(member, 17, 32)
  local k = job_key(id)
  src.claimed = src.claimed + 1
  if not src.prefix then
    zrem(src.ready, member)
  end
  zrem(src.pending, id)
  -- The job as read_job() returns it, after lease_us; the fields written below are then patched in.
  local v = redis.call('HMGET', k, 'lease_us', unpack(READ))
  local lease_us = table.remove(v, 1)
  if lease_us then -- else an index entry without its job: dropped all the same
    claimed = claimed + 1
    local expires = expiry[lease_us] -- most jobs of a claim share their lease: one format
    if not expires then
      expires = fmt(NOW + tonumber(lease_us))
      expiry[lease_us] = expires
    end
    -- The attempt is counted here, at claim, so a job that kills its worker still runs out of retries.
    local attempt = fmt(tonumber(v[AT.attempt] or '0') + 1)
    local token = token_base .. string.format('%08x', claimed)
    redis.call('HSET', k, 'state', 'running', 'updated_at', NOW_S, 'lease_expires_at', expires,
      'attempt', attempt, 'lease_token', token, 'started_at', NOW_S, 'worker_id', worker_id)
    v[AT.state], v[AT.updated_at], v[AT.lease_expires_at], v[AT.attempt] = 'running', NOW_S, expires, attempt
    v[AT.lease_token], v[AT.started_at], v[AT.worker_id] = token, NOW_S, worker_id
    zadd(src.running, seq, id) -- the seq as stored: 16 digits, a valid score all the same
    zadd(RUNNING_KEY, expires, id)
    out[#out + 1] = id
    out[#out + 1] = v
  end
end
for _, src in ipairs(sources) do
  if src.prefix and src.claimed > 0 then
    redis.call('ZREMRANGEBYRANK', src.ready, 0, src.claimed - 1)
  end
end
flush_batch()
return out
