-- notify_due.lua - move notifications whose time has come to the stream.
--
-- The schedule P..'ntf:due' holds retries, quiet-hour holds, not_before
-- and supersession waits, and report deadlines. Taking an entry off it and
-- queueing {ntf=<id>} on P..'notify' is one atomic step, so a crash loses
-- nothing and two instances never move one entry twice.
-- ARGV: 1 prefix, 2 now (ms), 3 at most this many.
-- Returns {moved, ms until the next entry is due or -1 when none}.

local P = ARGV[1]
local now = tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', P .. 'ntf:due', '-inf', now,
    'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do
    redis.call('ZREM', P .. 'ntf:due', id)
    redis.call('XADD', P .. 'notify', '*', 'ntf', id)
end
local nxt = redis.call('ZRANGE', P .. 'ntf:due', 0, 0, 'WITHSCORES')
local wait = -1
if nxt[2] then
    wait = tonumber(nxt[2]) - now
    if wait < 0 then wait = 0 end
end
return { #due, wait }
