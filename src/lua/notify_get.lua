-- notify_get.lua - one notification with its attempts.
-- ARGV: 1 prefix, 2 id. Returns {field, value, ...} (the attempts are the
-- JSON array in field "att").
-- Errors: "NOTFOUND ...".
local P = ARGV[1]
local id = ARGV[2]
if not string.match(id, '^nt_%d+$') then
    return redis.error_reply('NOTFOUND no such notification')
end
local h = redis.call('HGETALL', P .. 'ntf:' .. id)
if #h == 0 then return redis.error_reply('NOTFOUND no such notification') end
return h
