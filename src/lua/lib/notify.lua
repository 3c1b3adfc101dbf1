-- notify.lua - the notification record, shared by the notify_*.lua scripts.
--
-- One hash per notification, P..'ntf:<id>' (fields in
-- docs/notifications.md; its attempts in the field "att"), the retry/hold schedule in the zset P..'ntf:due' (score: when),
-- work in the stream P..'notify' (entries {ntf=<id>} or a business
-- system's raw fields), dead letters in P..'notify:dead', rejected raw
-- entries in P..'notify:rejects'. The clock is the caller's (ARGV `now`),
-- so tests can drive it.

-- States a newer notification for the same ref may replace.
local NTF_SUPERSEDABLE = { accepted = true, scheduled = true, held = true,
                           failed = true }

-- HMGET of a notification, absent fields as "" (only fields with a value
-- are written; see ntf_accept).
local function ntf_fields(k, ...)
    local v = redis.call('HMGET', k, ...)
    for i = 1, select('#', ...) do
        if not v[i] then v[i] = '' end
    end
    return v
end

local function ntf_json_array(s)
    if s == nil or s == '' then return {} end
    local ok, t = pcall(cjson.decode, s)
    if ok and type(t) == 'table' then return t end
    return {}
end

-- Log one notification event in the customer's timeline.
local function ntf_log(P, cust, now, kind, dir, channel, text, fields,
                       extra)
    local e = { type = kind, channel = channel, direction = dir,
                customer = cust, text = text, fields = cjson.encode(fields),
                ts = string.format('%d', now) }
    if extra then
        for k, v in pairs(extra) do e[k] = v end
    end
    return sb_log_append(P, e)
end

-- Terminal: forget the record after the retention period.
local function ntf_expire(P, id, retention)
    if retention and retention > 0 then
        redis.call('EXPIRE', P .. 'ntf:' .. id, retention)
    end
end

-- The attempts are the record's field "att": a JSON array of objects, in
-- order (one field, not a list key: a write and an expiry less each).
local function ntf_atts(s)
    local t = ntf_json_array(s)
    if #t == 0 then return {} end
    return t
end

local function ntf_superseded(P, old, by, by_event, now, retention)
    local k = P .. 'ntf:' .. old
    local h = ntf_fields(k, 'customer', 'event', 'ref')
    redis.call('HSET', k, 'state', 'superseded', 'superseded_by', by,
        'updated', now)
    redis.call('ZREM', P .. 'ntf:due', old)
    redis.call('INCR', P .. 'stats:ntf:superseded')
    ntf_log(P, h[1], now, 'notification', 'internal', '',
        h[2] .. ' superseded by ' .. by_event,
        { notification = old, event = h[2], ref = h[3], state = 'superseded',
          superseded_by = by })
    ntf_expire(P, old, retention)
end

-- Dead letter: the stream entry, the state, the timeline.
local function ntf_dead(P, id, reason, now, retention)
    local k = P .. 'ntf:' .. id
    local h = ntf_fields(k, 'customer', 'event', 'ref')
    local did = redis.call('XADD', P .. 'notify:dead', '*', 'ntf', id,
        'reason', reason, 'event', h[2] or '', 'customer', h[1] or '',
        'at', now)
    redis.call('HSET', k, 'state', 'dead', 'reason', reason, 'dlq', did,
        'updated', now)
    redis.call('HDEL', k, 'awaiting')
    redis.call('ZREM', P .. 'ntf:due', id)
    redis.call('INCR', P .. 'stats:ntf:dead')
    if h[1] ~= '' then
        ntf_log(P, h[1], now, 'notification', 'internal', '', reason,
            { notification = id, event = h[2], ref = h[3], state = 'dead' })
    end
    return did
end

-- Accept a notification: idempotency, recipient, record, supersession.
-- f: event, customer, email, phone, name, data, channels, locale,
-- priority, not_before (ms or ''), ref, idem ('' = none), src, enq (ms).
-- Returns id, duplicate (0/1), customer, due (0: send now, else when).
-- One HSET writes the record (each write is copied to the AOF).
-- decide (optional): called as decide(customer) when the notification is
-- to go out now; it may return field/value pairs that make it "sending"
-- in the same write (the dispatcher's channel choice), or nil.
local function ntf_accept(P, f, now, idem_ttl, window, retention, decide)
    local ikey
    if f.idem ~= '' then
        ikey = P .. 'ntf:idem:' .. redis.sha1hex(f.idem)
        local id = redis.call('GET', ikey)
        if id then
            local h = redis.call('HMGET', P .. 'ntf:' .. id, 'customer')
            return id, 1, h[1] or '', -1
        end
    end
    local cust
    if f.customer ~= '' then
        if not string.match(f.customer, '^cu_%d+$') then
            sb_fail('NOTFOUND', 'no such customer')
        end
        cust = sb_resolve(P, f.customer)
        if not cust then sb_fail('NOTFOUND', 'no such customer') end
    end
    local idents = {}
    if f.email ~= '' then idents[#idents + 1] = 'email:' .. f.email end
    if f.phone ~= '' then idents[#idents + 1] = 'phone:' .. f.phone end
    if not cust and #idents == 0 then
        sb_fail('INVALID', 'customer, email or phone is required')
    end
    local owners
    cust, owners = sb_idents_lookup(P, cust, idents)
    cust = sb_idents_attach(P, cust, idents, owners, f.name, f.locale, now)

    local id = 'nt_' .. redis.call('INCR', P .. 'seq:ntf')
    local due = 0
    local nb = tonumber(f.not_before)
    if nb and nb > now then due = nb end
    if f.ref ~= '' then
        local rk = P .. 'ntf:ref:' .. redis.sha1hex(cust .. '\n' .. f.ref)
        local old = redis.call('GET', rk)
        if old then
            local st = redis.call('HGET', P .. 'ntf:' .. old, 'state')
            if st and NTF_SUPERSEDABLE[st] then
                ntf_superseded(P, old, id, f.event, now, retention)
            end
        end
        redis.call('SET', rk, id, 'EX', 30 * 86400)
        if window > 0 and f.priority ~= 'urgent' and due < now + window then
            due = now + window
        end
    end
    -- Only the fields that have a value: a hash field costs a search of
    -- the listpack on every write (readers take a missing one as "").
    local hs = { 'id', id, 'state', due > 0 and 'scheduled' or 'accepted',
                 'event', f.event, 'customer', cust, 'priority', f.priority,
                 'data', f.data, 'created', now, 'enq', f.enq, 'src', f.src,
                 'updated', now }
    local opt = { ref = f.ref, locale = f.locale, channels = f.channels,
                  to_email = f.email, to_phone = f.phone,
                  not_before = f.not_before }
    for _, k in ipairs({ 'ref', 'locale', 'channels', 'to_email', 'to_phone',
                         'not_before' }) do
        if opt[k] ~= '' then
            hs[#hs + 1] = k
            hs[#hs + 1] = opt[k]
        end
    end
    local extra = due == 0 and decide and decide(cust)
    if extra then
        hs[4] = 'sending'
        for _, v in ipairs(extra) do hs[#hs + 1] = v end
    end
    redis.call('HSET', P .. 'ntf:' .. id, unpack(hs))
    if ikey then redis.call('SET', ikey, id, 'EX', idem_ttl) end
    if due > 0 then redis.call('ZADD', P .. 'ntf:due', due, id) end
    return id, 0, cust, due
end
