-- log_read.lua - the global contact log, oldest first.
--
-- ARGV: 1 prefix, 2 after (a contact id, exclusive, or "" for the start),
-- 3 limit (1..1000). Returns XRANGE's reply: {{id, {field, value, ...}}, ...}.
-- Errors: "INVALID ...".

local P = ARGV[1]
local after = ARGV[2]
local limit = tonumber(ARGV[3])
if not limit or limit < 1 or limit > 1000 or limit % 1 ~= 0 then
    return redis.error_reply('INVALID limit must be 1..1000')
end
local start = '-'
if after ~= '' then
    local ms, seq = string.match(after, '^(%d+)%-(%d+)$')
    if not ms then ms = string.match(after, '^(%d+)$') end
    if not ms or #ms > 15 or (seq and #seq > 15) then
        return redis.error_reply('INVALID after must be a contact id')
    end
    if not seq then
        -- A bare time: everything after that millisecond.
        after = ms .. '-18446744073709551615'
    end
    start = '(' .. after
end
return redis.call('XRANGE', P .. 'log', start, '+', 'COUNT', limit)
