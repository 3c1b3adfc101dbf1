-- notify_dlq.lua - the dead letters: list, retry, drop.
--
-- ARGV: 1 prefix, 2 op, then
--   list:  3 before (a dead-letter entry id, exclusive, or ""), 4 limit
--          -> {next_before or "", {entry id, {field, value, ...}}, ...}
--   retry: 3 notification id, 4 now -> "ok": the entry leaves the
--          stream, the notification starts over with every channel
--          untried and is queued now
--   drop:  3 notification id, 4 now, 5 retention (s) -> "ok": the entry
--          leaves the stream, the notification stays dead, marked dropped,
--          and expires after the retention period
-- Errors: "NOTFOUND not in the dead-letter queue", "INVALID ...".
local P = ARGV[1]
local D = P .. 'notify:dead'
local op = ARGV[2]

if op == 'list' then
    local limit = tonumber(ARGV[4])
    if not limit or limit < 1 or limit > 500 then
        return redis.error_reply('INVALID limit must be 1..500')
    end
    local hi = '+'
    if ARGV[3] ~= '' then
        if not string.match(ARGV[3], '^%d+%-%d+$') then
            return redis.error_reply('INVALID before')
        end
        hi = '(' .. ARGV[3]
    end
    local r = redis.call('XREVRANGE', D, hi, '-', 'COUNT', limit + 1)
    local nxt = ''
    if #r > limit then
        r[#r] = nil
        nxt = r[#r][1]
    end
    return { nxt, r }
end

local id = ARGV[3]
if not string.match(id, '^nt_%d+$') then
    return redis.error_reply('NOTFOUND not in the dead-letter queue')
end
local k = P .. 'ntf:' .. id
local h = redis.call('HMGET', k, 'state', 'dlq')
if h[1] ~= 'dead' or not h[2] or h[2] == '' then
    return redis.error_reply('NOTFOUND not in the dead-letter queue')
end
local now = tonumber(ARGV[4])
redis.call('XDEL', D, h[2])
if op == 'retry' then
    redis.call('PERSIST', k)
    redis.call('HSET', k, 'state', 'accepted', 'tried', '[]', 'cur', '',
        'ch_tries', 0, 'ch_first', 0, 'dlq', '', 'reason', '',
        'updated', now)
    redis.call('XADD', P .. 'notify', '*', 'ntf', id)
    redis.call('INCR', P .. 'stats:ntf:dlq_retried')
elseif op == 'drop' then
    redis.call('HSET', k, 'dlq', '', 'dropped', now, 'updated', now)
    -- Out of the queue: kept for the retention period like any finished
    -- one (5 ARGV: the retention in seconds, when given).
    local ret = tonumber(ARGV[5])
    if ret and ret > 0 then
        redis.call('EXPIRE', k, ret)
    end
else
    return redis.error_reply('INVALID op')
end
return 'ok'
