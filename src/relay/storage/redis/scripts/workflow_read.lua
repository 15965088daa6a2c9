-- workflow_read.lua: workflow_get (read only).
--
-- Keys: P:run:<id>, the jobs of its steps (P:job:<id>).
-- ARGV[2]  run id
-- Returns {read}: workflows().read() of the run (_lib.lua), false (nil) when there is none.

return {workflows().read(ARGV[2])}
