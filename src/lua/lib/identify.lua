-- identify.lua - who is this? Customers found or made from identities.
--
-- Shared by ingest.lua (a contact arrives) and the notification scripts (a
-- notification names its recipient by e-mail or phone). Split in a read
-- half and a write half so a script can finish its checks before the
-- first write.

-- Record that identity `ident`, owned by `b`, arrived with customer `a`;
-- once per (a, b, identity).
local function sb_propose(P, a, b, ident, at)
    local set = P .. 'cust:' .. a .. ':proposals'
    for _, m in ipairs(redis.call('SMEMBERS', set)) do
        local ok, p = pcall(cjson.decode, m)
        if ok and type(p) == 'table' and p.identity == ident and
            ((p.a == a and p.b == b) or (p.a == b and p.b == a)) then
            return
        end
    end
    local m = '{"a":' .. cjson.encode(a) .. ',"b":' .. cjson.encode(b) ..
        ',"identity":' .. cjson.encode(ident) .. ',"at":' .. at .. '}'
    redis.call('ZADD', P .. 'merge:proposals', at, m)
    redis.call('SADD', set, m)
    redis.call('SADD', P .. 'cust:' .. b .. ':proposals', m)
end

-- Read half. idents: list of "type:value". cust: a resolved customer id or
-- nil. Returns the customer (the given one, else the owner of the first
-- known identity, else nil) and owners[i] (resolved owner or false).
local function sb_idents_lookup(P, cust, idents)
    local owners = {}
    for i = 1, #idents do
        local o = redis.call('HGET', P .. 'identity', idents[i])
        if o then o = sb_resolve(P, o) end
        owners[i] = o or false
        if not cust and o then cust = o end
    end
    return cust, owners
end

-- Write half: make the customer when there is none, attach the unowned
-- identities, propose merges for those owned by someone else.
-- Returns cust, new_customer (0/1), proposed (0/1).
local function sb_idents_attach(P, cust, idents, owners, name, locale, now)
    local new_customer, proposed = 0, 0
    if not cust then
        cust = 'cu_' .. redis.call('INCR', P .. 'seq:customer')
        redis.call('HSET', P .. 'cust:' .. cust, 'id', cust, 'name', name,
            'locale', locale, 'timezone', '', 'tier', '', 'tags', '[]',
            'curator', '', 'prefs', '{"order":[],"opt_out":{}}',
            'created', now, 'updated', now)
        new_customer = 1
    end
    local attached = false
    for i = 1, #idents do
        local o = owners[i]
        if not o then
            if redis.call('HSETNX', P .. 'identity', idents[i], cust) == 1 then
                redis.call('SADD', P .. 'cust:' .. cust .. ':ids', idents[i])
                attached = true
            end
        elseif o ~= cust then
            sb_propose(P, cust, o, idents[i], now)
            proposed = 1
        end
    end
    if attached and new_customer == 0 then
        redis.call('HSET', P .. 'cust:' .. cust, 'updated', now)
    end
    return cust, new_customer, proposed
end

-- "1700000000000-5" -> "1700000000000005": a timeline score, ms * 1000 +
-- seq (seq clamped to 999), built as a string so no digits are lost.
local function sb_tl_score(id)
    local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
    local s = tonumber(seq)
    if s > 999 then s = 999 end
    return ms .. string.format('%03d', s)
end

-- Append one entry to the contact log and the customer's timeline (and
-- the conversation's when e.conversation is set). e: type, channel,
-- direction, customer, conversation, subject, text, source_id,
-- provider_id, agent, fields (JSON text), ts. Returns the log id.
local function sb_log_append(P, e)
    local cid = redis.call('XADD', P .. 'log', '*', 'type', e.type,
        'channel', e.channel or '', 'direction', e.direction,
        'customer', e.customer, 'conversation', e.conversation or '',
        'subject', e.subject or '', 'text', e.text or '',
        'source_id', e.source_id or '', 'provider_id', e.provider_id or '',
        'agent', e.agent or '', 'fields', e.fields or '{}', 'ts', e.ts)
    local score = sb_tl_score(cid)
    redis.call('ZADD', P .. 'cust:' .. e.customer .. ':tl', score, cid)
    if e.conversation and e.conversation ~= '' then
        redis.call('ZADD', P .. 'conv:' .. e.conversation .. ':tl', score,
            cid)
    end
    return cid
end
