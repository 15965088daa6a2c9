-- leader_resign.lua: leader_resign (semantics.md rule 9).
--
-- Keys: P:leader:<name> (deleted if ARGV[3] holds it).
-- ARGV[2]  leadership name
-- ARGV[3]  holder
-- Returns 1 when the leadership was given up, else 0.

local k = key('leader', ARGV[2])
if redis.call('HGET', k, 'holder') == ARGV[3] then
  redis.call('DEL', k)
  return 1
end
return 0
