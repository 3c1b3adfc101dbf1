-- timeline.lua - a customer's or conversation's contacts, newest first.
--
-- ARGV: 1 prefix, 2 "customer" or "conversation", 3 id, 4 before (a
-- contact id, exclusive, or "" for the newest), 5 limit (1..200).
-- The timeline zsets score each contact id by ms * 1000 + seq, so order is
-- exact. When `before` is on the timeline the page starts right after its
-- rank (exact even for equal scores); otherwise below its score.
-- Returns {next_before or "", {id, {field, value, ...}}, ...}; an entry
-- missing from the log comes back with an empty field list.
-- Errors: "NOTFOUND ...", "INVALID ...".

local P = ARGV[1]
local function resolve(id) return sb_resolve(P, id) end -- common.lua


local kind, id, before = ARGV[2], ARGV[3], ARGV[4]
local limit = tonumber(ARGV[5])
if not limit or limit < 1 or limit > 200 or limit % 1 ~= 0 then
    return redis.error_reply('INVALID limit must be 1..200')
end
local key
if kind == 'customer' then
    local cust = string.match(id, '^cu_%d+$') and resolve(id)
    if not cust then return redis.error_reply('NOTFOUND no such customer') end
    key = P .. 'cust:' .. cust .. ':tl'
elseif kind == 'conversation' then
    if not string.match(id, '^cv_%d+$') or
        redis.call('EXISTS', P .. 'conv:' .. id) == 0 then
        return redis.error_reply('NOTFOUND no such conversation')
    end
    key = P .. 'conv:' .. id .. ':tl'
else
    return redis.error_reply('INVALID timeline kind')
end

local ids
if before == '' then
    ids = redis.call('ZREVRANGE', key, 0, limit)
else
    local ms, seq = string.match(before, '^(%d+)%-(%d+)$')
    if not ms or #ms > 15 or #seq > 15 then
        return redis.error_reply('INVALID before must be a contact id')
    end
    local rank = redis.call('ZREVRANK', key, before)
    if rank then
        ids = redis.call('ZREVRANGE', key, rank + 1, rank + limit + 1)
    else
        local s = tonumber(seq)
        if s > 999 then s = 999 end
        ids = redis.call('ZREVRANGEBYSCORE', key,
            '(' .. ms .. string.format('%03d', s), '-inf',
            'LIMIT', 0, limit + 1)
    end
end

local out = { '' }
local n = #ids
if n > limit then
    n = limit
    out[1] = ids[limit]
end
for i = 1, n do
    local e = redis.call('XRANGE', P .. 'log', ids[i], ids[i])
    if e[1] then
        out[#out + 1] = { ids[i], e[1][2] }
    else
        out[#out + 1] = { ids[i], {} }
    end
end
return out
