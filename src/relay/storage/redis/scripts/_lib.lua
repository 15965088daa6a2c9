-- _lib.lua: the prelude of every script (not a script of its own).
--
-- relay.storage.redis.scripts prepends `local TEMPLATES = {...}` (the key templates of
-- relay/storage/redis/keys.py, the one place key names are defined), `local READ = {...}` (the job
-- fields Python reads, relay.storage.redis.codec.FIELDS), `local LAYOUT = '...'` (keys.LAYOUT) and
-- then this file to each operation's .lua file, so every script is self-contained on the server.
--
-- Conventions shared by every script:
--   KEYS[1]  the key prefix of the store (URL ?prefix=, default "relay"); every key is built from it
--            with key(name, ...). Redis Cluster is not supported: scripts derive job keys at run time.
--   ARGV[1]  the storage time in integer microseconds since the epoch when a test clock is injected
--            into the backend, or '' to use the Redis server's TIME (never a worker's clock).
--   ARGV[2…] the operation's own arguments, documented at the top of each script.
--
-- Times and seqs are integers held in Lua numbers (doubles, exact below 2^53: until the year 2255).
-- They are written with fmt(): Lua's own tostring would print 1.767e+15 and lose digits.
--
-- Scripts never fail after their first write (Redis does not roll a script back): every check that
-- can refuse an operation comes before any write.
--
-- The job hash (P:job:<id>, see relay.storage.redis.codec): `doc` holds what never changes, encoded
-- by Python and only read by Python; the fields the scripts read or change are fields of their own
-- (with copies of the few parts of the doc they need: queue, kind, score (-priority), max_retries,
-- lease_us, idempotency_key, and when set rate_key, concurrency_key, ordering_key, unique_until,
-- unique_while, workflow_run_id). Absent means: `attempt` 0, `errors` [], `checkpoint` null, `held` false, anything
-- else None. Scripts return a job as its id and read_job(): the READ fields, values only.
--
-- Flow control (issue 12) keeps three rules here, so that no script can forget one:
--   * concurrency: P:conc:<n>:<queue>:<key> holds the running jobs of a concurrency key; claim adds
--     them, unindex() of a running job removes it (every way out of running unindexes the job);
--   * ordering keys: P:heads:<queue> names each key's one unheld blocking job (its head); a job that
--     joins a key with a head is held (in P:held:..., not in a ready or waiting set). When the head
--     ends (finish_final, delete_job) the held job with the smallest seq becomes the head;
--   * unique windows: key_holder() says whether an idempotency key still keeps new jobs out.
--
-- Workflow runs (issue 13) keep the rules of relay.storage.workflow_rules here too, for the same
-- reason: a step's job that ends (finish_final, and finish.lua's own path for a completion) applies
-- after_step_ended to its run, and one that comes back (requeue_job) applies to_retry, in the same
-- script. A job has a `workflow_run_id` field only when it is a step; every other job pays one absent
-- field in an HMGET it does anyway. The code is in workflows(), defined only when a step is met.

local PREFIX = KEYS[1]

local function key(name, ...)
  return PREFIX .. ':' .. string.format(TEMPLATES[name], ...)
end

-- The hottest key name, built by concatenation (string.format costs more, once per job per call).
local JOB_PREFIX = key('job', '')
local function job_key(id)
  return JOB_PREFIX .. id
end

-- key(name, a, b), made once per script call: the index keys of a batch repeat for every job.
local KEY_CACHE = {}
local function key2(name, a, b)
  local by_a = KEY_CACHE[name]
  if not by_a then
    by_a = {}
    KEY_CACHE[name] = by_a
  end
  local by_b = by_a[a]
  if not by_b then
    by_b = {}
    by_a[a] = by_b
  end
  local k = by_b[b]
  if not k then
    k = key(name, a, b)
    by_b[b] = k
  end
  return k
end

local function key1(name, a)
  return key2(name, a, '')
end

local RUNNING_KEY, IDEM_KEY = key('running'), key('idem')

-- Keys of a pair (queue, a key of its jobs): the queue's length first, so no two pairs share a name.
local function conc_key(queue, ckey)
  return key('conc', #queue, queue, ckey)
end

local function held_key(queue, okey)
  return key('held', #queue, queue, okey)
end

local function fmt(n)
  return string.format('%.0f', n)
end

local function storage_now()
  if ARGV[1] ~= '' then
    return tonumber(ARGV[1])
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local NOW = storage_now()
local NOW_S = fmt(NOW)

local STATES = {'pending', 'scheduled', 'running', 'completed', 'failed', 'dead', 'cancelled'}
local KINDS = {'task', 'shell', 'external'}
local WAITING = {scheduled = true, failed = true}
local FINAL = {completed = true, dead = true, cancelled = true}
local MAX_MEMBER_TIME = 9999999999999999
-- Members per ZADD / ZREM of a batch: Lua's unpack() is limited by its C stack (8,000 values).
local BATCH_CHUNK = 1000

-- The fields the index helpers and the state machine read, in one HMGET per job (the chained jobs'
-- specs too: reading them here saves a call per finished job).
local function load(id)
  local v = redis.call('HMGET', job_key(id), 'state', 'queue', 'kind', 'score', 'run_at', 'seq',
    'lease_expires_at', 'finished_at', 'lease_token', 'attempt', 'max_retries', 'lease_us',
    'cancel_requested', 'idempotency_key', 'on_success_spec', 'on_failure_spec', 'concurrency_key',
    'ordering_key', 'held', 'workflow_run_id')
  if not v[1] then
    return nil
  end
  return {
    id = id, state = v[1], queue = v[2], kind = v[3], score = v[4], run_at = tonumber(v[5]),
    seq = tonumber(v[6]), seq_s = v[6], lease_expires_at = v[7] and tonumber(v[7]),
    finished_at = v[8] and tonumber(v[8]),
    lease_token = v[9], attempt = tonumber(v[10] or '0'), max_retries = tonumber(v[11]),
    lease_us = tonumber(v[12]), cancel_requested = v[13] == '1', idempotency_key = v[14],
    on_success_spec = v[15], on_failure_spec = v[16], concurrency_key = v[17] or nil,
    ordering_key = v[18] or nil, held = v[19] == '1', workflow_run_id = v[20] or nil,
  }
end

-- A queue's limits (P:limits, relay.storage.redis.codec.limits_json) as a table, or false; read
-- once per script call.
local LIMITS_CACHE = {}
local function queue_limits(queue)
  local limits = LIMITS_CACHE[queue]
  if limits == nil then
    local raw = redis.call('HGET', key('limits'), queue)
    limits = raw and cjson.decode(raw) or false
    LIMITS_CACHE[queue] = limits
  end
  return limits
end

-- Token buckets (P:buckets:<queue>): what a stored bucket ("<tokens> <at µs>"; nil: never stored, or
-- pruned: full) holds now under `rate` ({tokens a second, burst}), by the same double arithmetic as
-- relay.storage.flow_control.tokens_now; and the text that stores `tokens` at now (%.17g: exact).
local function bucket_tokens(raw, rate)
  if not raw then
    return rate[2]
  end
  local tokens, at = string.match(raw, '^(%S+) (%S+)$')
  local elapsed = math.max(0, (NOW - tonumber(at)) / 1000000)
  return math.min(rate[2], tonumber(tokens) + elapsed * rate[1])
end

local function bucket_text(tokens)
  return string.format('%.17g', tokens) .. ' ' .. NOW_S
end

-- The limit of bucket `field` of a queue with `limits`: '' is the queue's own, any other a rate key's.
local function bucket_limit(limits, field)
  if field == '' then
    return limits.rate
  end
  return limits.key_rate
end

-- A job left running in `queue`: with a concurrency limit, its slot is someone else's now.
local function slot_freed(queue, woken)
  local limits = queue_limits(queue)
  if limits and (limits.concurrency or limits.key_concurrency) then
    woken[queue] = true
  end
end

-- What Python reads of job `id` (READ, the list relay.storage.redis.codec.FIELDS), for a reply.
local function read_job(id)
  return redis.call('HMGET', job_key(id), unpack(READ))
end

-- The position of each READ field in read_job()'s reply.
local AT = {}
for n, name in ipairs(READ) do
  AT[name] = n
end

-- Sorted-set writes, batched. A script that changes many jobs calls begin_batch() first: zadd() and
-- zrem() then only note the change, and flush_batch() sends the notes of each key as one ZADD or
-- ZREM with many members. A command costs Redis far more than a member does (one call, one AOF
-- entry, one conversion of the arguments), so a claim of 200 jobs sends 4 sorted-set commands
-- instead of 800. Changes keep their order: a ZREM noted after ZADDs on the same key sends those
-- ZADDs first. Until the flush, the script must not read a sorted set it changed (the job hashes
-- are written at once).
local batch_runs, batch_keys = nil, nil

local function begin_batch()
  batch_runs, batch_keys = {}, {}
end

-- A run: the arguments of one pending ZADD (score, member, ...) or ZREM (member, ...) of key k.
local function send_run(k, run)
  local command, step = run.add and 'ZADD' or 'ZREM', BATCH_CHUNK * (run.add and 2 or 1)
  for x = 1, run.n, step do
    redis.call(command, k, unpack(run, x, math.min(x + step - 1, run.n)))
  end
  run.n = 0
end

local function pending_run(k, add)
  local run = batch_runs[k]
  if not run then
    run = {add = add, n = 0}
    batch_runs[k] = run
    batch_keys[#batch_keys + 1] = k
  elseif run.add ~= add then
    send_run(k, run)
    run.add = add
  end
  return run
end

local function zadd(k, score, member)
  if not batch_runs then
    redis.call('ZADD', k, score, member)
    return
  end
  local run = pending_run(k, true)
  local n = run.n
  run[n + 1], run[n + 2], run.n = score, member, n + 2
end

local function zrem(k, member)
  if not batch_runs then
    redis.call('ZREM', k, member)
    return
  end
  local run = pending_run(k, false)
  local n = run.n + 1
  run[n], run.n = member, n
end

local function flush_batch()
  for _, k in ipairs(batch_keys) do
    send_run(k, batch_runs[k])
  end
  batch_runs, batch_keys = nil, nil
end

-- Seqs are stored as 16 digits with leading zeros: the form the ready members need, and a valid
-- sorted-set score all the same.
local function seq_text(seq)
  return string.format('%016.0f', seq)
end

-- The run_at part of a ready member.
local function member_time(run_at)
  return string.format('%016.0f', math.min(math.max(run_at, 0), MAX_MEMBER_TIME))
end
local NOW_MEMBER = member_time(NOW)

-- "<run_at %016d><seq %016d><id>": within one priority (the score), Redis orders members by bytes.
local function ready_member(j)
  return (j.run_at == NOW and NOW_MEMBER or member_time(j.run_at)) .. (j.seq_s or seq_text(j.seq)) .. j.id
end

-- The state-specific structure of a job: where the claim, the scheduler, the reaper and the pruner
-- look for it. Returns key, score, member.
local function placement(j)
  if j.state == 'pending' then
    return key2('ready', j.kind, j.queue), j.score, ready_member(j)
  elseif WAITING[j.state] then
    return key2('waiting', j.kind, j.queue), fmt(j.run_at), j.id
  elseif j.state == 'running' then
    return RUNNING_KEY, fmt(j.lease_expires_at), j.id
  end
  return key1('finished', j.state), fmt(j.finished_at), j.id
end

-- j.seq_s: the seq as stored, when the caller has it already. A held job waits in its key's held
-- set instead of a ready or waiting set; that set is written at once, never batched (a release reads
-- it in the same script). A held workflow step (no ordering key) is in no set but P:idx: its run's
-- graph names it, and the step that releases it puts it in its ready or waiting set.
local function index(j)
  local seq_s = j.seq_s or seq_text(j.seq)
  zadd(key2('idx', j.state, j.queue), seq_s, j.id)
  if j.held then
    if j.ordering_key then
      redis.call('ZADD', held_key(j.queue, j.ordering_key), seq_s, j.id)
    end
    return
  end
  local k, score, member = placement(j)
  zadd(k, score, member)
end

-- Call before changing any field placement() reads (state, run_at, lease, finished_at, held). A
-- running job leaves its concurrency key's set here: whatever takes it out of running, the slot is
-- given back (SREM: twice is harmless).
local function unindex(j)
  zrem(key2('idx', j.state, j.queue), j.id)
  if j.held then
    if j.ordering_key then
      redis.call('ZREM', held_key(j.queue, j.ordering_key), j.id)
    end
    return
  end
  local k, _, member = placement(j)
  zrem(k, member)
  if j.state == 'running' and j.concurrency_key then
    redis.call('SREM', conc_key(j.queue, j.concurrency_key), j.id)
  end
end

-- Ordering keys. join_line: whether job `id` with ordering key `okey` must be held (the key has
-- another unheld blocking job, its head); if the key has no head, `id` becomes it.
local function join_line(queue, okey, id)
  local heads = key1('heads', queue)
  local head = redis.call('HGET', heads, okey)
  if head and head ~= id then
    return true
  end
  if not head then
    redis.call('HSET', heads, okey, id)
  end
  return false
end

-- The head of (queue, okey) stopped blocking: the held job inserted first (smallest seq) becomes
-- the head, unheld, in its ready or waiting set (a scheduled job due meanwhile is promoted by the
-- next claim, like any other), and its queue is woken. No held job left: the key has no head.
local function release_next(queue, okey, woken)
  local heads, held = key1('heads', queue), held_key(queue, okey)
  while true do
    local first = redis.call('ZRANGE', held, 0, 0)[1]
    if not first then
      redis.call('HDEL', heads, okey)
      return
    end
    redis.call('ZREM', held, first)
    local k = job_key(first)
    if redis.call('EXISTS', k) == 1 then -- else an entry without its job: dropped, and the next one
      redis.call('HSET', heads, okey, first)
      redis.call('HDEL', k, 'held')
      local next_k, score, member = placement(load(first))
      zadd(next_k, score, member)
      woken[queue] = true
      return
    end
  end
end

-- Whether a dead job keeps its key's later jobs waiting (the queue's ordering_dead, when it died).
local function dead_blocks(queue)
  local limits = queue_limits(queue)
  return limits and limits.ordering_dead == 'block'
end

-- Job j (stored in its new, final state) no longer blocks its key: if it was the head, the next
-- held job goes on. A dead job under ordering_dead=block stays the head until it is requeued and
-- ends, or is deleted.
local function leave_line(j, woken)
  if not j.ordering_key or (j.state == 'dead' and dead_blocks(j.queue)) then
    return
  end
  if redis.call('HGET', key1('heads', j.queue), j.ordering_key) == j.id then
    release_next(j.queue, j.ordering_key, woken)
  end
end

-- Writes j's state (with updated_at = now) and the fields placement() reads, plus `extra` (a flat
-- list of field, value), then indexes j under its new state. Pair with unindex() before the change.
local function store(j, extra)
  local args = {job_key(j.id), 'state', j.state, 'updated_at', NOW_S, 'run_at', fmt(j.run_at)}
  if j.lease_expires_at then
    args[#args + 1] = 'lease_expires_at'
    args[#args + 1] = fmt(j.lease_expires_at)
  end
  if j.finished_at then
    args[#args + 1] = 'finished_at'
    args[#args + 1] = fmt(j.finished_at)
  end
  for _, v in ipairs(extra or {}) do
    args[#args + 1] = v
  end
  redis.call('HSET', unpack(args))
  index(j)
end

local function clear_lease(j)
  redis.call('HDEL', job_key(j.id), 'lease_token', 'lease_expires_at')
  j.lease_token = nil
  j.lease_expires_at = nil
end

-- Appends one error (JSON object text, see relay.storage.redis.codec) to the job's JSON array.
local function add_error(id, err)
  if err == nil or err == '' then
    return
  end
  local k = job_key(id)
  local errors = redis.call('HGET', k, 'errors')
  if not errors or errors == '[]' then
    errors = '[' .. err .. ']'
  else
    errors = string.sub(errors, 1, -2) .. ',' .. err .. ']'
  end
  redis.call('HSET', k, 'errors', errors)
end

-- A fresh UUIDv7-shaped id for a chained job without a client id: the time in ms, then the job's
-- seq (unique in this store) where UUIDv7 has random bits.
local function new_id(seq)
  local t = string.format('%012x', math.floor(NOW / 1000))
  local s = string.format('%018x', seq)
  return string.sub(t, 1, 8) .. '-' .. string.sub(t, 9, 12) .. '-7' .. string.sub(s, 1, 3) .. '-8' ..
    string.sub(s, 4, 6) .. '-' .. string.sub(s, 7, 18)
end

-- A packed job (relay.storage.redis.codec.pack_new_job): an array of strings, by position. P_SCORE is
-- the ready set's score, -priority, formatted by the caller.
local P_ID, P_IDEM, P_RUN_AT, P_DELAY, P_QUEUE, P_KIND, P_SCORE = 1, 2, 3, 4, 5, 6, 7
local P_MAX_RETRIES, P_LEASE_US, P_DOC, P_CHECKPOINT, P_ON_SUCCESS, P_ON_FAILURE = 8, 9, 10, 11, 12, 13
-- The flow-control tail, present only when one of them is set ('' = None, or the default).
local P_RATE_KEY, P_CONCURRENCY_KEY, P_ORDERING_KEY, P_UNIQUE_FOR, P_UNIQUE_WHILE = 14, 15, 16, 17, 18
-- After it, for a workflow's step only: its run's id, and '1' when it starts held (it has
-- dependencies; workflow_start.lua).
local P_RUN_ID, P_STEP_HELD = 19, 20
-- Stored only when not '' (absent means None, or null for the checkpoint).
local OPTIONAL_FIELDS = {{'idempotency_key', P_IDEM}, {'checkpoint', P_CHECKPOINT},
  {'on_success_spec', P_ON_SUCCESS}, {'on_failure_spec', P_ON_FAILURE}}
local FLOW_FIELDS = {{'rate_key', P_RATE_KEY}, {'concurrency_key', P_CONCURRENCY_KEY},
  {'ordering_key', P_ORDERING_KEY}, {'unique_while', P_UNIQUE_WHILE}}

-- The flow-control fields of the packed job `p` (with its tail), written to hash `k`; the job joins
-- its ordering key's line. Returns whether it is held (behind its ordering key, or a step waiting for
-- the steps it depends on).
local function write_flow_fields(p, k, id, queue)
  local args, n = {k}, 1
  for _, f in ipairs(FLOW_FIELDS) do
    local value = p[f[2]]
    if value ~= '' then
      args[n + 1], args[n + 2], n = f[1], value, n + 2
    end
  end
  if p[P_UNIQUE_FOR] ~= '' then
    args[n + 1], args[n + 2], n = 'unique_until', fmt(NOW + tonumber(p[P_UNIQUE_FOR])), n + 2
  end
  local okey = p[P_ORDERING_KEY]
  local held = okey ~= '' and join_line(queue, okey, id)
  local run_id = p[P_RUN_ID]
  if run_id then
    args[n + 1], args[n + 2], n = 'workflow_run_id', run_id, n + 2
    held = held or p[P_STEP_HELD] == '1'
  end
  if held then
    args[n + 1], args[n + 2], n = 'held', '1', n + 2
  end
  if n > 1 then
    redis.call('HSET', unpack(args))
  end
  return held
end

-- Writes the packed job `p` as job `id` (hash key `k`) with `seq` (its id free and its idempotency
-- key unused: the caller checked), in one HSET, and indexes it (batched or not, as the script chose).
-- `origin_field` is 'batch' (an insert: the call's token) or 'parent_id' (a chained job). The
-- caller adds the idempotency key to P:idem and the queue to P:queues. Returns the job's state, and
-- whether it is held behind an earlier job of its ordering key.
-- The hot path of every insert: no table and as few formatted numbers as can be.
local function write_job(p, k, id, seq, origin_field, origin)
  local run_at, run_at_s = nil, p[P_RUN_AT]
  if run_at_s == '' then
    local delay = tonumber(p[P_DELAY])
    run_at = NOW + delay
    run_at_s = delay == 0 and NOW_S or fmt(run_at)
  else
    run_at = tonumber(run_at_s)
  end
  local state = run_at > NOW and 'scheduled' or 'pending'
  local seq_s, queue, kind = seq_text(seq), p[P_QUEUE], p[P_KIND]
  redis.call('HSET', k, 'doc', p[P_DOC], 'state', state, 'queue', queue, 'kind', kind,
    'score', p[P_SCORE], 'run_at', run_at_s, 'seq', seq_s, 'created_at', NOW_S, 'updated_at', NOW_S,
    'max_retries', p[P_MAX_RETRIES], 'lease_us', p[P_LEASE_US], origin_field, origin)
  -- The optional fields, in a second HSET only for the jobs that have any.
  if p[P_IDEM] ~= '' or p[P_CHECKPOINT] ~= '' or p[P_ON_SUCCESS] ~= '' or p[P_ON_FAILURE] ~= '' then
    local extra, n = {}, 0
    for _, f in ipairs(OPTIONAL_FIELDS) do
      local value = p[f[2]]
      if value ~= '' then
        extra[n + 1], extra[n + 2], n = f[1], value, n + 2
      end
    end
    redis.call('HSET', k, unpack(extra))
  end
  local held = p[P_ORDERING_KEY] ~= nil and write_flow_fields(p, k, id, queue)
  zadd(key2('idx', state, queue), seq_s, id)
  if held then
    if p[P_ORDERING_KEY] ~= '' then -- else a held step: in no set but P:idx (see index())
      redis.call('ZADD', held_key(queue, p[P_ORDERING_KEY]), seq_s, id)
    end
  elseif state == 'pending' then
    local run_at_member = run_at == NOW and NOW_MEMBER or member_time(run_at)
    zadd(key2('ready', kind, queue), p[P_SCORE], run_at_member .. seq_s .. id)
  else
    zadd(key2('waiting', kind, queue), run_at_s, id)
  end
  return state, held
end

-- Unique windows: the job that has idempotency key `idem` (nil if none), whether that job still
-- holds it (relay.storage.base: its window, if any, has not ended, and unless it asked to hold the
-- key only while active, it is stored; else it is not final yet), and the token of its insert call.
local function key_holder(idem)
  local id = redis.call('HGET', IDEM_KEY, idem)
  if not id then
    return nil
  end
  local v = redis.call('HMGET', job_key(id), 'state', 'unique_until', 'unique_while', 'batch')
  local holds = v[1] and (not v[2] or tonumber(v[2]) > NOW) and (v[3] ~= 'active' or not FINAL[v[1]])
  return id, holds and true or false, v[4]
end

-- Inserts a parent's on_success / on_failure job (spec_json: the packed job as a JSON array). A
-- chain whose idempotency key is held or whose id is taken counts as enqueued already, as on every
-- backend; a key that lapsed passes to the chained job.
local function insert_chain(spec_json, parent_id, woken)
  if not spec_json then
    return
  end
  local p = cjson.decode(spec_json)
  local idem, lapsed = p[P_IDEM], nil
  if idem ~= '' then
    local holder, holds = key_holder(idem)
    if holds then
      return
    end
    lapsed = holder
  end
  if p[P_ID] ~= '' and redis.call('EXISTS', job_key(p[P_ID])) == 1 then
    return
  end
  local seq = redis.call('INCR', key('seq'))
  local id = p[P_ID] ~= '' and p[P_ID] or new_id(seq)
  if idem ~= '' then
    if lapsed then
      redis.call('HDEL', job_key(lapsed), 'idempotency_key')
    end
    redis.call('HSET', IDEM_KEY, idem, id)
  end
  redis.call('HSETNX', key('queues'), p[P_QUEUE], '0')
  local state, held = write_job(p, job_key(id), id, seq, 'parent_id', parent_id)
  if state == 'pending' and not held then
    woken[p[P_QUEUE]] = true
  end
end

-- Workflow runs: defined below (needs finish_final), called only for a step's job.
local workflows

-- Ends a running (or waiting) job in a final state at now, writing `extra` (as store() does), lets
-- its ordering key go on, then enqueues the job of `chain_field` ('on_success_spec' /
-- 'on_failure_spec'), if any. A held job (cancelled) simply stops being held. A workflow's step
-- applies its end to its run (workflows().step_ended).
local function finish_final(j, state, chain_field, woken, extra)
  j.state = state
  j.finished_at = NOW
  if j.held then
    redis.call('HDEL', job_key(j.id), 'held')
    j.held = false
  end
  store(j, extra)
  leave_line(j, woken)
  if chain_field then
    insert_chain(j[chain_field], j.id, woken)
  end
  if j.workflow_run_id then
    workflows().step_ended(j.id, j.workflow_run_id, woken)
  end
end

-- Moves the due scheduled / failed jobs of one (kind, queue) to pending; returns how many.
local function promote_due(kind, queue)
  local ids = redis.call('ZRANGEBYSCORE', key2('waiting', kind, queue), '-inf', NOW_S)
  for _, id in ipairs(ids) do
    local j = load(id)
    unindex(j)
    j.state = 'pending'
    store(j, nil)
  end
  return #ids
end

-- Deletes job j with its logs; the head of an ordering key lets the key go on, whatever its state.
local function delete_job(j, woken)
  unindex(j)
  redis.call('DEL', job_key(j.id), key('logs', j.id))
  if j.idempotency_key and redis.call('HGET', IDEM_KEY, j.idempotency_key) == j.id then
    redis.call('HDEL', IDEM_KEY, j.idempotency_key)
  end
  local okey = j.ordering_key
  if okey and not j.held and redis.call('HGET', key1('heads', j.queue), okey) == j.id then
    release_next(j.queue, okey, woken)
  end
end

-- Wakes workers of `woken` (a set of queue names) in every process: a JSON array [origin, queues...].
-- Returns the queues as a list: a script that gets an origin returns them too, and the calling
-- instance wakes its own waiters at once (they may wait before its subscription is confirmed), as
-- after an insert, and skips the echo.
local function publish(woken, origin)
  local message, queues = {origin or ''}, {}
  for queue in pairs(woken) do
    message[#message + 1] = queue
    queues[#queues + 1] = queue
  end
  if #queues > 0 then
    redis.call('PUBLISH', key('wake'), cjson.encode(message))
  end
  return queues
end

-- Reads a count-prefixed list from ARGV at i: returns the list and the next i.
local function argv_list(i)
  local n = tonumber(ARGV[i])
  local out = {}
  for x = i + 1, i + n do
    out[#out + 1] = ARGV[x]
  end
  return out, i + n + 1
end

-- job_insert_many's work (insert_many.lua, and schedule_fire.lua for a tick's job): inserts the packed
-- jobs `jobs` (a list, their ids chosen by the caller) all or nothing, for the call with token `batch`.
-- Returns the reply and the set of queues to wake. The reply is {'dup', id} when a client-chosen id
-- is taken (nothing written), else {'ok', now, known, held}: `known` lists the jobs this call did not
-- write now, each {position in the batch (from 1), created 0/1, id, read_job()}; `held` the
-- positions of the jobs written held (behind an earlier job of their ordering key). Every other job
-- was written as sent, at `now`.
--
-- An idempotency key already used returns that job, while it holds the key (key_holder); a key that
-- lapsed passes to the new job, and the old job's idempotency_key goes (all or nothing with the rest
-- of the batch: nothing changes before every check passed). A batch token that matches the stored
-- job's is a first try of this very call whose reply was lost: its jobs are returned as created.
--
-- Cost: one EXISTS and one or two HSETs per job; the sorted sets (the index, the ready or waiting
-- set), P:idem, P:seq and P:queues get one command per key for the whole batch.
local function insert_jobs(jobs, batch)
  -- Keys planned earlier in this batch (taken afresh, or found held), and ids planned.
  local planned_keys, planned_ids = {}, {}
  -- The job that has this key now: found, created 0/1; or nil and the job whose key lapsed.
  local function existing_for(idem)
    if idem == '' then
      return nil
    end
    local planned = planned_keys[idem]
    if planned then
      return planned, 0
    end
    local id, holds, owner_batch = key_holder(idem)
    if not id then
      return nil
    end
    if owner_batch == batch then -- ours, from a first try of this very call: created, once
      planned_keys[idem] = id
      return id, 1
    end
    if holds then
      planned_keys[idem] = id
      return id, 0
    end
    return nil, nil, id
  end

  -- `fresh`, `fresh_keys`, `fresh_at`: the jobs to write, their hash keys and batch positions.
  local known, fresh, fresh_keys, fresh_at, lapsed = {}, {}, {}, {}, {}
  for n, p in ipairs(jobs) do
    local idem = p[P_IDEM]
    local found, created, lapsed_from = existing_for(idem)
    if found then
      known[#known + 1] = {n, created, found}
    else
      local id = p[P_ID]
      if planned_ids[id] then
        return {'dup', id}, {}
      end
      local k = job_key(id)
      local taken = redis.call('EXISTS', k) == 1
      if taken and redis.call('HGET', k, 'batch') ~= batch then
        return {'dup', id}, {}
      end
      planned_ids[id] = true
      if idem ~= '' then
        planned_keys[idem] = id
      end
      if lapsed_from then
        lapsed[#lapsed + 1] = lapsed_from
      end
      if taken then
        known[#known + 1] = {n, 1, id} -- written by a first try of this call
      else
        fresh[#fresh + 1] = p
        fresh_keys[#fresh_keys + 1] = k
        fresh_at[#fresh_at + 1] = n
      end
    end
  end

  local woken, held_at = {}, {}
  local count = #fresh
  if count > 0 then
    redis.call('SETNX', key('layout'), LAYOUT)
    for _, id in ipairs(lapsed) do
      redis.call('HDEL', job_key(id), 'idempotency_key') -- P:idem passes to the new job below
    end
    begin_batch()
    -- Seqs in batch order: one INCRBY for the batch.
    local seq = redis.call('INCRBY', key('seq'), count) - count
    local queues, idems, ni = {}, {}, 0
    for x, p in ipairs(fresh) do
      local id, queue = p[P_ID], p[P_QUEUE]
      local state, held = write_job(p, fresh_keys[x], id, seq + x, 'batch', batch)
      if held then
        held_at[#held_at + 1] = fresh_at[x]
      elseif state == 'pending' then
        woken[queue] = true
      end
      queues[queue] = true
      if p[P_IDEM] ~= '' then
        idems[ni + 1], idems[ni + 2], ni = p[P_IDEM], id, ni + 2
      end
    end
    for x = 1, ni, 2 * BATCH_CHUNK do
      redis.call('HSET', IDEM_KEY, unpack(idems, x, math.min(x + 2 * BATCH_CHUNK - 1, ni)))
    end
    for queue in pairs(queues) do
      redis.call('HSETNX', key('queues'), queue, '0')
    end
    flush_batch()
  end

  -- Read after the writes: a later job with the key of an earlier one of this batch reads it as written.
  for _, k in ipairs(known) do
    k[4] = read_job(k[3])
  end
  return {'ok', NOW_S, known, held_at}, woken
end

-- Schedules: stores next_run_at ('' = none) of schedule `name` (hash `k`), and keeps it in
-- P:schedules-due while it is not paused and has a next run.
local function schedule_set_next(k, name, next_run, paused)
  if next_run == '' then
    redis.call('HDEL', k, 'next_run_at')
  else
    redis.call('HSET', k, 'next_run_at', next_run)
  end
  if paused ~= '1' and next_run ~= '' then
    redis.call('ZADD', key('schedules_due'), next_run, name)
  else
    redis.call('ZREM', key('schedules_due'), name)
  end
end

-- Brings job j (loaded, dead / failed / cancelled) back to pending at now, `held` or not: a requeue
-- (requeue_job), or a step that a retry brings back with it. The attempt count and the errors stay.
local function bring_back(j, held, woken)
  unindex(j)
  redis.call('HDEL', job_key(j.id), 'finished_at', 'lease_token', 'lease_expires_at')
  j.state = 'pending'
  j.run_at = NOW
  j.finished_at = nil
  j.lease_expires_at = nil
  j.held = held
  store(j, held and {'cancel_requested', '0', 'held', '1'} or {'cancel_requested', '0'})
  if not held then
    woken[j.queue] = true
  end
end

-- Workflow runs (issue 13): the rules of relay.storage.workflow_rules, ported (the conformance suite
-- holds both to the same behaviour). A run is the hash P:run:<id> (see relay.storage.redis.keys):
-- `graph` is a JSON array of its steps in definition order, each [name, job id, depends_on, allow
-- failure]; `policy` 'stop' / 'continue'; `cancelled` '1' while an operator's cancel holds.
--
-- Defined on first use in a script call (workflows() returns the same table after): the scripts run
-- this prelude on every call, and a call that meets no step should not pay for making these
-- functions.
local WORKFLOWS = nil
local STEP_WAITING = {pending = true, scheduled = true, failed = true}
local STEP_RETRYABLE = {dead = true, cancelled = true, failed = true}

workflows = function()
  if WORKFLOWS then
    return WORKFLOWS
  end
  local wf = {}
  local runs = {} -- run id -> the run (run_of), or false: read once per script call
  local quiet = false -- applying a step's effects: the steps they cancel do not cascade

  -- The run `run_id` as the rules see it, or false: {id, key, policy, cancelled, nodes (the graph's
  -- entries), by_name, by_job, children (name -> the nodes depending on it, in definition order)}.
  local function run_of(run_id)
    local run = runs[run_id]
    if run ~= nil then
      return run
    end
    local k = key('run', run_id)
    local v = redis.call('HMGET', k, 'graph', 'policy', 'cancelled')
    if not v[1] then
      runs[run_id] = false
      return false
    end
    local nodes = cjson.decode(v[1])
    local by_name, by_job, children = {}, {}, {}
    for _, node in ipairs(nodes) do
      by_name[node[1]], by_job[node[2]], children[node[1]] = node, node, {}
    end
    for _, node in ipairs(nodes) do
      local seen = {}
      for _, parent in ipairs(node[3]) do
        local list = children[parent]
        if list and not seen[parent] then
          seen[parent] = true
          list[#list + 1] = node
        end
      end
    end
    run = {id = run_id, key = k, policy = v[2], cancelled = v[3] == '1', nodes = nodes,
      by_name = by_name, by_job = by_job, children = children}
    runs[run_id] = run
    return run
  end
  wf.run_of = run_of

  -- workflow_rules.StepNow, read lazily: now(node) is {state (nil: the job is gone), held}, read once
  -- per reader (make a new reader after the steps change).
  local function reader()
    local seen = {}
    return function(node)
      local s = seen[node]
      if not s then
        local v = redis.call('HMGET', job_key(node[2]), 'state', 'held')
        s = {state = v[1] or nil, held = v[2] == '1'}
        seen[node] = s
      end
      return s
    end
  end
  wf.reader = reader

  -- relay.types.step_succeeded
  local function succeeded(now, node)
    local state = now(node).state
    return state == 'completed' or (node[4] == true and (state == 'dead' or state == 'cancelled'))
  end

  -- Whether every dependency of `node` succeeded, or is in `back` (a set of names, or nil).
  local function ready(run, now, node, back)
    for _, name in ipairs(node[3]) do
      local parent = run.by_name[name]
      if not (back and back[name]) and not (parent and succeeded(now, parent)) then
        return false
      end
    end
    return true
  end

  local function descendants(run, node)
    local found, seen, frontier = {}, {}, {node}
    while #frontier > 0 do
      local current = table.remove(frontier)
      for _, child in ipairs(run.children[current[1]]) do
        if not seen[child] then
          seen[child] = true
          found[#found + 1] = child
          frontier[#frontier + 1] = child
        end
      end
    end
    return found
  end

  -- workflow_rules.after_step_ended: the nodes to release, and the nodes to cancel.
  local function after_step_ended(run, now, node)
    local release, cancel = {}, {}
    if succeeded(now, node) then
      for _, child in ipairs(run.children[node[1]]) do
        local s = now(child)
        if s.held and STEP_WAITING[s.state] and ready(run, now, child, nil) then
          release[#release + 1] = child
        end
      end
    elseif run.policy == 'stop' then
      for _, other in ipairs(run.nodes) do
        if other ~= node and STEP_WAITING[now(other).state] then
          cancel[#cancel + 1] = other
        end
      end
    else
      for _, other in ipairs(descendants(run, node)) do
        if STEP_WAITING[now(other).state] then
          cancel[#cancel + 1] = other
        end
      end
    end
    return release, cancel
  end

  -- workflow_rules.to_retry: step name -> held, for the steps that come back with `node`; or nil.
  local function to_retry(run, now, node)
    if not STEP_RETRYABLE[now(node).state] then
      return nil
    end
    local back, changed = {[node[1]] = true}, true
    while changed do -- the cancelled steps whose every dependency has succeeded or comes back
      changed = false
      for _, other in ipairs(run.nodes) do
        if not back[other[1]] and now(other).state == 'cancelled' and ready(run, now, other, back) then
          back[other[1]] = true
          changed = true
        end
      end
    end
    if not ready(run, now, node, back) then
      return nil
    end
    local plan = {}
    for _, other in ipairs(run.nodes) do
      if back[other[1]] then
        local held = false
        for _, name in ipairs(other[3]) do
          local parent = run.by_name[name]
          if back[name] or not (parent and succeeded(now, parent)) then
            held = true
            break
          end
        end
        plan[other[1]] = held
      end
    end
    return plan
  end
  wf.to_retry = to_retry

  function wf.set_cancelled(run, cancelled)
    if run.cancelled ~= cancelled then
      if cancelled then
        redis.call('HSET', run.key, 'cancelled', '1')
      else
        redis.call('HDEL', run.key, 'cancelled')
      end
      run.cancelled = cancelled
    end
  end

  -- Job `id`, a step of run `run_id`, went from a non-final state to a final one (and is stored so):
  -- unless the run is cancelled, the steps it names are released (into their ready or waiting set,
  -- their queue woken) or cancelled.
  function wf.step_ended(id, run_id, woken)
    if quiet then
      return
    end
    local run = run_of(run_id)
    if not run or run.cancelled then
      return
    end
    local node = run.by_job[id]
    if not node then
      return
    end
    local release, cancel = after_step_ended(run, reader(), node)
    for _, other in ipairs(release) do
      local j = load(other[2])
      redis.call('HDEL', job_key(j.id), 'held')
      j.held = false
      local k, score, member = placement(j)
      zadd(k, score, member)
      woken[j.queue] = true
    end
    quiet = true
    for _, other in ipairs(cancel) do
      local j = load(other[2])
      unindex(j)
      finish_final(j, 'cancelled', nil, woken)
    end
    quiet = false
  end

  -- Requeues step j (loaded, in a final state): to_retry with its state before, its run's cancelled
  -- flag cleared, and the steps the plan names back with it; without a plan (a dependency failed and
  -- stays failed) it comes back held. Returns false (nothing done) when j is in no run's graph.
  function wf.requeue(j, woken)
    local run = run_of(j.workflow_run_id)
    local node = run and run.by_job[j.id]
    if not node then
      return false
    end
    local plan = to_retry(run, reader(), node)
    wf.set_cancelled(run, false)
    if not plan then
      bring_back(j, true, woken)
      return true
    end
    bring_back(j, plan[node[1]], woken)
    for _, other in ipairs(run.nodes) do
      local held = plan[other[1]]
      if held ~= nil and other ~= node then
        local o = load(other[2])
        if o then
          bring_back(o, held, woken)
        end
      end
    end
    return true
  end

  -- Run `run_id` for Python (relay.storage.redis.workflows.run_from_reply), or false: workflow,
  -- policy, params, cancelled, created_at, seq, graph, then per step (in the graph's order) the
  -- HMGET of its job's state, held, attempt, result, started_at, finished_at.
  function wf.read(run_id)
    local v = redis.call('HMGET', key('run', run_id), 'workflow', 'policy', 'params', 'cancelled',
      'created_at', 'seq', 'graph')
    if not v[1] then
      return false
    end
    local steps = {}
    for x, node in ipairs(cjson.decode(v[7])) do
      steps[x] = redis.call('HMGET', job_key(node[2]), 'state', 'held', 'attempt', 'result',
        'started_at', 'finished_at')
    end
    v[8] = steps
    return v
  end

  WORKFLOWS = wf
  return wf
end

-- Requeues job j (loaded, dead / failed / cancelled): behind its ordering key's head if it has one; a
-- workflow's step coming back from a final state applies to_retry to its run.
local function requeue_job(j, woken)
  if j.workflow_run_id and FINAL[j.state] and workflows().requeue(j, woken) then
    return
  end
  bring_back(j, j.ordering_key ~= nil and join_line(j.queue, j.ordering_key, j.id), woken)
end
