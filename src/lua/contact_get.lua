-- contact_get.lua - one entry of the contact log by its id.
-- ARGV: 1 prefix, 2 contact id. Returns XRANGE's reply (empty when none).
local P = ARGV[1]
local id = ARGV[2]
if not string.match(id, '^%d+%-%d+$') or #id > 41 then
    return redis.error_reply('INVALID contact id')
end
return redis.call('XRANGE', P .. 'log', id, id)
