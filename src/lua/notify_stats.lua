-- notify_stats.lua - queue gauges for /metrics and the dashboard, and the
-- stream trim.
--
-- Consumers idle for a day with nothing pending are removed.
-- The work stream is trimmed (MINID) only below both its oldest pending
-- entry and the first entry not yet delivered to the group, so nothing a
-- consumer has not acknowledged is ever removed.
-- ARGV: 1 prefix, 2 group, 3 trim (1/0), 4 idle ms after which a
-- consumer with nothing pending is removed (default a day).
-- Returns {length, lag (-1 unknown), pending, scheduled, dead, rejects,
--   {consumer, pending, idle ms, ...}, trimmed}.
local P = ARGV[1]
local S = P .. 'notify'
local G = ARGV[2]
if redis.call('EXISTS', S) == 0 then
    return { 0, 0, 0, redis.call('ZCARD', P .. 'ntf:due'),
        redis.call('XLEN', P .. 'notify:dead'),
        redis.call('XLEN', P .. 'notify:rejects'), {}, 0 }
end
local lag, pending, last = -1, 0, nil
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', S)
if ok then
    for _, g in ipairs(groups) do
        local t = {}
        for i = 1, #g, 2 do t[g[i]] = g[i + 1] end
        if t.name == G then
            pending = t.pending or 0
            last = t['last-delivered-id']
            if type(t.lag) == 'number' then lag = t.lag end
        end
    end
end
-- A consumer that holds nothing and has not been seen for a day (an
-- instance renamed or gone for good) is forgotten, so the list and the
-- per-consumer gauge do not grow for ever.
local GONE_MS = tonumber(ARGV[4]) or 86400000
local consumers = {}
if last then
    for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', S, G)) do
        local t = {}
        for i = 1, #c, 2 do t[c[i]] = c[i + 1] end
        if t.pending == 0 and t.idle > GONE_MS then
            redis.call('XGROUP', 'DELCONSUMER', S, G, t.name)
        else
            consumers[#consumers + 1] = t.name
            consumers[#consumers + 1] = t.pending
            consumers[#consumers + 1] = t.idle
        end
    end
end
local trimmed = 0
if ARGV[3] == '1' and last then
    local minid = last
    local ms, seq = string.match(last, '^(%d+)%-(%d+)$')
    minid = ms .. '-' .. (tonumber(seq) + 1)
    local sum = redis.call('XPENDING', S, G)
    if sum[2] and sum[2] ~= false then
        local a1, a2 = string.match(sum[2], '^(%d+)%-(%d+)$')
        if tonumber(a1) < tonumber(ms) or (a1 == ms and
            tonumber(a2) <= tonumber(seq)) then
            minid = sum[2]
        end
    end
    trimmed = redis.call('XTRIM', S, 'MINID', minid)
end
return { redis.call('XLEN', S), lag, pending,
    redis.call('ZCARD', P .. 'ntf:due'), redis.call('XLEN', P .. 'notify:dead'),
    redis.call('XLEN', P .. 'notify:rejects'), consumers, trimmed }
