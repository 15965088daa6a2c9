-- claim.lua: job_claim (semantics.md rule 2). One call claims up to `limit` jobs atomically.
--
-- Keys: P:queues (paused flags), P:limits (the queues' limits, one HMGET), P:waiting:<kind>:<queue>
--   (due jobs promoted first), P:ready:<kind>:<queue> (read, then the claimed members removed),
--   P:job:<id>, P:idx:<state>:<queue>, P:running, P:conc:<n>:<queue>:<key> (claimed jobs with a
--   concurrency key); for limited queues also P:buckets:<queue> (read, and written when drawn from).
-- ARGV[2]  worker id
-- ARGV[3]  limit (> 0; the caller returns [] for less)
-- ARGV[4]  lease token base: 24 random hex digits from the caller; each job's token is the base plus
--          its position as 8 hex digits, so tokens are fresh per claim without randomness in Lua
-- ARGV[5…] queues (count-prefixed), then kinds (count-prefixed)
-- Returns {retry_after, id, read_job(), id, read_job(), ...}: the claimed jobs in claim order
--   (priority DESC, run_at, seq); retry_after is '' or the seconds until the soonest token bucket that
--   refused a job holds a token (%.17g).
--
-- Cost per claimed job: one HMGET and one HSET; the sorted sets (ready, index, running) get one
-- command per key for the whole claim. Queues without limits cost one HMGET of P:limits per claim,
-- nothing else.
--
-- Queues with limits (relay.storage.flow_control, whose ClaimPlanner.offer this ports): their due
-- jobs are walked in claim order, page by page, and each is offered to the queue's rules; a refused
-- job is passed over and the walk goes on. A queue whose concurrency is full or whose bucket is empty
-- takes nothing more: its sources are dropped, at no cost per job. A walk stops after MAX_PASSED
-- jobs refused by a key's limit (a script holds the whole server), so a claim behind more than that
-- many jobs of full keys may come back short; the next claim walks again from the start.

local MAX_PASSED = 1000
local MAX_PAGE = 512 -- members per ZRANGE of a limited walk (pages grow 16, 32, ... up to this)

local worker_id, limit, token_base = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local queues, i = argv_list(5)
local kinds = argv_list(i)

-- The ready set of (kind, queue) as a source of candidates: its first `limit` due members, in its
-- order (a pending job due later is skipped: it only exists when the clock went back). `prefix`: the
-- members taken are its first ranks (none skipped before them), so that one ZREMRANGEBYRANK removes
-- the claimed ones.
local function new_source(kind, queue)
  return {ready = key2('ready', kind, queue), pending = key2('idx', 'pending', queue),
    running = key2('idx', 'running', queue), queue = queue, members = {}, scores = {}, prefix = true,
    claimed = 0}
end

local function collect(kind, queue)
  local src = new_source(kind, queue)
  local k = src.ready
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

-- Claim order between two candidates {source, member, score}: score (-priority), then run_at and seq.
local function before(a, b)
  if a[3] ~= b[3] then
    return a[3] < b[3]
  end
  return string.sub(a[2], 1, 32) < string.sub(b[2], 1, 32)
end

-- The wanted (kind, queue) pairs: queues not paused, each once; and their limits.
local seen_kinds, seen_queues, unpaused, wanted = {}, {}, {}, {}
for _, kind in ipairs(kinds) do
  seen_kinds[kind] = true
end
for _, queue in ipairs(queues) do
  if not seen_queues[queue] and redis.call('HGET', key('queues'), queue) ~= '1' then
    unpaused[#unpaused + 1] = queue
    for kind in pairs(seen_kinds) do
      wanted[#wanted + 1] = {kind, queue}
    end
  end
  seen_queues[queue] = true
end
if #wanted == 0 then
  return {''}
end
local limited = nil -- queue -> its limits, for the queues that have any
local stored_limits = redis.call('HMGET', key('limits'), unpack(unpaused))
for x, queue in ipairs(unpaused) do
  local raw = stored_limits[x]
  if raw then
    local l = cjson.decode(raw)
    if l.rate or l.key_rate or l.concurrency or l.key_concurrency then
      limited = limited or {}
      limited[queue] = l
    end
  end
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

-- The candidates of a claim without limits, in claim order: the first `limit` of each source, merged
-- (no merge for one source: a worker of one queue and one kind).
local function plain_candidates()
  local candidates, sources = {}, {}
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
    table.sort(candidates, before)
  end
  local chosen = {}
  for n = 1, math.min(limit, #candidates) do
    chosen[n] = candidates[n]
  end
  return chosen, sources
end

-- -- the limited walk ------------------------------------------------------------------------------

-- Token buckets drawn from or read by this claim: BUCKETS[queue][field] = tokens at NOW (field ''
-- is the queue's own bucket, else a rate key's); `drawn` marks the ones to write back.
local BUCKETS, drawn, retry_after = {}, {}, nil

local function tokens_now(queue, field, rate)
  local by_field = BUCKETS[queue]
  if not by_field then
    by_field = {}
    BUCKETS[queue] = by_field
  end
  local tokens = by_field[field]
  if tokens == nil then
    tokens = bucket_tokens(redis.call('HGET', key1('buckets', queue), field), rate)
    by_field[field] = tokens
  end
  return tokens
end

-- Whether the bucket holds a token; if not, when it will (retry_after: the soonest of those).
local function has_token(queue, field, rate)
  local tokens = tokens_now(queue, field, rate)
  if tokens >= 1 then
    return true
  end
  local wait = (1 - tokens) / rate[1]
  if not retry_after or wait < retry_after then
    retry_after = wait
  end
  return false
end

local function draw(queue, field)
  BUCKETS[queue][field] = BUCKETS[queue][field] - 1
  drawn[#drawn + 1] = {queue, field}
end

-- Per limited queue: its running jobs (idx:running) plus those taken, running jobs per concurrency
-- key (P:conc) plus those taken, and whether it can take any more.
local QUEUE_STATE = {}
local function queue_state(queue, l)
  local state = QUEUE_STATE[queue]
  if not state then
    state = {limits = l, running = l.concurrency and redis.call('ZCARD', key2('idx', 'running', queue)) or 0,
      by_key = {}, exhausted = false}
    QUEUE_STATE[queue] = state
  end
  return state
end

-- relay.storage.flow_control.ClaimPlanner.offer: whether to take a job of `queue` with these keys
-- (false for none); if so, its tokens and slot are counted as taken.
local function offer(state, queue, rate_key, ckey)
  local l = state.limits
  if l.concurrency and state.running >= l.concurrency then
    state.exhausted = true
    return false
  end
  if l.rate and not has_token(queue, '', l.rate) then
    state.exhausted = true
    return false
  end
  local slot = ckey and l.key_concurrency and ckey
  if slot then
    local in_use = state.by_key[slot]
    if in_use == nil then
      in_use = redis.call('SCARD', conc_key(queue, slot))
    end
    state.by_key[slot] = in_use
    if in_use >= l.key_concurrency then
      return false
    end
  end
  local key_bucket = rate_key and l.key_rate and rate_key
  if key_bucket and not has_token(queue, key_bucket, l.key_rate) then
    return false
  end
  if l.rate then
    draw(queue, '')
  end
  if key_bucket then
    draw(queue, key_bucket)
  end
  if slot then
    state.by_key[slot] = state.by_key[slot] + 1
  end
  state.running = state.running + 1
  return true
end

-- A source of the walk: its next due member and score (nil when it has none left), page by page.
local function head(src)
  while true do
    if src.pos > #src.page then
      if src.done then
        return nil
      end
      src.page = redis.call('ZRANGE', src.ready, src.offset, src.offset + src.size - 1, 'WITHSCORES')
      src.pos = 1
      src.done = #src.page < 2 * src.size
      src.offset = src.offset + src.size
      src.size = math.min(src.size * 2, MAX_PAGE)
      if #src.page == 0 then
        return nil
      end
    end
    local member = src.page[src.pos]
    if tonumber(string.sub(member, 1, 16)) <= NOW then
      return member, tonumber(src.page[src.pos + 1])
    end
    src.pos = src.pos + 2 -- due later: only when the clock went back
  end
end

-- The claim of queues with limits (and maybe some without): a merge of every source's due members,
-- each offered to its queue's rules. Members taken are removed one by one (not by rank). Nothing is
-- written to a ready set before the walk ends, so the pages' offsets stay right.
local function limited_candidates()
  local live, sources = {}, {}
  for _, w in ipairs(wanted) do
    local src = new_source(w[1], w[2])
    src.prefix, src.page, src.pos, src.offset, src.size, src.done = false, {}, 1, 0, 16, false
    live[#live + 1] = src
    sources[#sources + 1] = src
  end
  local chosen, passed = {}, 0
  while #chosen < limit and passed < MAX_PASSED do
    local best, best_src, x = nil, nil, 1
    while x <= #live do
      local src = live[x]
      local l = limited[src.queue]
      local member, score = nil, nil
      if not (l and queue_state(src.queue, l).exhausted) then
        member, score = head(src)
      end
      if member then
        local c = {src, member, score}
        if not best or before(c, best) then
          best, best_src = c, src
        end
        x = x + 1
      else
        table.remove(live, x) -- drained, or its queue takes no more
      end
    end
    if not best then
      break
    end
    best_src.pos = best_src.pos + 2
    local queue, l = best_src.queue, limited[best_src.queue]
    local take = true
    if l then
      local rate_key, ckey = false, false
      if l.key_rate or l.key_concurrency then
        local v = redis.call('HMGET', job_key(string.sub(best[2], 33)), 'rate_key', 'concurrency_key')
        rate_key, ckey = v[1], v[2]
      end
      take = offer(queue_state(queue, l), queue, rate_key, ckey)
      if not take and not queue_state(queue, l).exhausted then
        passed = passed + 1
      end
    end
    if take then
      chosen[#chosen + 1] = best
    end
  end
  return chosen, sources
end

-- Writes back the buckets drawn from: "<tokens> <now>", one HSET per queue.
local function store_buckets()
  local by_queue = {}
  for _, d in ipairs(drawn) do
    local queue, field = d[1], d[2]
    local fields = by_queue[queue]
    if not fields then
      fields = {}
      by_queue[queue] = fields
    end
    fields[field] = bucket_text(BUCKETS[queue][field])
  end
  for queue, fields in pairs(by_queue) do
    local args = {key1('buckets', queue)}
    for field, value in pairs(fields) do
      args[#args + 1] = field
      args[#args + 1] = value
    end
    redis.call('HSET', unpack(args))
  end
end

-- -- claiming the chosen ------------------------------------------------------------------------------

local chosen, sources
if limited then
  chosen, sources = limited_candidates()
  store_buckets()
else
  chosen, sources = plain_candidates()
end

-- What a claim reads of each job: what read_job() returns, but for `held` (a claimed job is never
-- held), in whose place it reads lease_us, and then concurrency_key.
local CLAIM_READ, CKEY_AT = {unpack(READ)}, #READ + 1
CLAIM_READ[AT.held], CLAIM_READ[CKEY_AT] = 'lease_us', 'concurrency_key'

local out, claimed, expiry = {retry_after and string.format('%.17g', retry_after) or ''}, 0, {}
for _, c in ipairs(chosen) do
  local src, member = c[1], c[2]
  local id, seq = string.sub(member, 33), string.sub(member, 17, 32)
  local k = job_key(id)
  src.claimed = src.claimed + 1
  if not src.prefix then
    zrem(src.ready, member)
  end
  zrem(src.pending, id)
  -- The job as read_job() returns it (held false, concurrency_key cut off); the fields written below
  -- are then patched in.
  local v = redis.call('HMGET', k, unpack(CLAIM_READ))
  local lease_us, ckey = v[AT.held], v[CKEY_AT]
  v[AT.held], v[CKEY_AT] = false, nil
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
    if ckey then -- counted for key_concurrency whenever the queue has it, now or later
      redis.call('SADD', conc_key(src.queue, ckey), id)
    end
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
