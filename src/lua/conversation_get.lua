-- conversation_get.lua - one conversation.
--
-- ARGV: 1 prefix, 2 conversation id ("cv_<n>"). Returns the HGETALL of
-- P..'conv:<id>' (store.c makes the JSON object).
-- Errors: "NOTFOUND ...".

local P = ARGV[1]
if not string.match(ARGV[2], '^cv_%d+$') then
    return redis.error_reply('NOTFOUND no such conversation')
end
local h = redis.call('HGETALL', P .. 'conv:' .. ARGV[2])
if #h == 0 then return redis.error_reply('NOTFOUND no such conversation') end
return h
