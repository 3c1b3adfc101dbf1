-- mailq.lua - the quarantine of inbound mail that could not be taken in.
--
-- An entry "mq_<n>" is a hash P..'mailq:<id>' (raw, reason, mailbox, uid,
-- uidvalidity, size, from, subject, at, tries) and a member of the sorted
-- set P..'mailq' scored by time. Entries stay until replayed or dropped.
--
-- ARGV: 1 prefix, 2 op, then
--   add:    3 now, 4 raw, 5 reason, 6 mailbox, 7 uid, 8 uidvalidity,
--           9 from, 10 subject -> id
--   list:   3 before (an id, exclusive, or ""), 4 limit
--           -> {next_before or "", {id, {field, value, ...}}, ...}
--           (every field but raw)
--   show:   3 id -> {field, value, ...} (raw included)
--   fail:   3 id, 4 now, 5 reason -> "ok" (a replay that failed again)
--   del:    3 id -> "ok"
-- Errors: "NOTFOUND no such quarantine entry", "INVALID ...".
local P = ARGV[1]
local Q = P .. 'mailq'
local op = ARGV[2]

local LIST_FIELDS = { 'at', 'reason', 'mailbox', 'uid', 'uidvalidity',
    'size', 'from', 'subject', 'tries' }

if op == 'add' then
    local id = 'mq_' .. redis.call('INCR', P .. 'seq:mailq')
    redis.call('HSET', Q .. ':' .. id, 'raw', ARGV[4], 'reason', ARGV[5],
        'mailbox', ARGV[6], 'uid', ARGV[7], 'uidvalidity', ARGV[8],
        'size', #ARGV[4], 'from', ARGV[9], 'subject', ARGV[10],
        'at', ARGV[3], 'tries', 1)
    redis.call('ZADD', Q, tonumber(ARGV[3]), id)
    redis.call('INCR', P .. 'stats:mailq:added')
    return id
end

if op == 'list' then
    local limit = tonumber(ARGV[4])
    if not limit or limit < 1 or limit > 500 then
        return redis.error_reply('INVALID limit must be 1..500')
    end
    local hi = '+inf'
    if ARGV[3] ~= '' then
        local s = redis.call('ZSCORE', Q, ARGV[3])
        if not s then return redis.error_reply('INVALID before') end
        hi = '(' .. s
    end
    local ids = redis.call('ZREVRANGEBYSCORE', Q, hi, '-inf', 'LIMIT', 0,
        limit + 1)
    local nxt = ''
    if #ids > limit then
        ids[#ids] = nil
        nxt = ids[#ids]
    end
    local out = {}
    for i, id in ipairs(ids) do
        local v = redis.call('HMGET', Q .. ':' .. id, unpack(LIST_FIELDS))
        local f = {}
        for k, name in ipairs(LIST_FIELDS) do
            f[#f + 1] = name
            f[#f + 1] = v[k] or ''
        end
        out[i] = { id, f }
    end
    return { nxt, out }
end

local id = ARGV[3]
if not string.match(id or '', '^mq_%d+$') or
    redis.call('EXISTS', Q .. ':' .. id) == 0 then
    return redis.error_reply('NOTFOUND no such quarantine entry')
end

if op == 'show' then
    return redis.call('HGETALL', Q .. ':' .. id)
elseif op == 'fail' then
    redis.call('HSET', Q .. ':' .. id, 'reason', ARGV[5], 'at', ARGV[4])
    redis.call('HINCRBY', Q .. ':' .. id, 'tries', 1)
    return 'ok'
elseif op == 'del' then
    redis.call('DEL', Q .. ':' .. id)
    redis.call('ZREM', Q, id)
    return 'ok'
end
return redis.error_reply('INVALID unknown op')
