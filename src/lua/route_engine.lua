-- route_engine.lua - every routing decision, atomically (see router.h).
--
-- One script for all decisions so they share one set of helpers: route,
-- reopen, presence, accept, decline, transfer, resolve and tick. Each call
-- validates its arguments and reads what it needs before its first write;
-- after that nothing fails on purpose (no "INVALID"/"CONFLICT" past the
-- first write). Every decision is appended to the contact log (type
-- "assignment", or "status" for resolve/reopen; direction "internal";
-- the reason as JSON in `fields`) with the timelines ingest.lua keeps, and
-- is published on the channel P .. 'events'. The clock is ARGV[3], never
-- TIME; the log entry id is XADD's own (Redis' clock), like ingest's, so
-- the log stays ordered. docs/routing.md describes the keys and shapes.
--
-- ARGV: 1 prefix, 2 op, 3 now (ms), 4 routing config (JSON built by
--   router.c), then per op:
--   route conv | reopen conv | presence agent state | accept conv agent |
--   decline conv agent | transfer conv to_agent to_queue by |
--   resolve conv by | tick
-- Returns {result JSON, counts JSON} (counts feed the metrics).
-- Errors: "INVALID ...", "NOTFOUND ...", "CONFLICT ...".

local P = ARGV[1]
local OP = ARGV[2]
local NOWS = ARGV[3]
local NOW
local CFG
local NULL, ARR = SB_NULL, SB_ARR -- common.lua
local fail, arr, enc = sb_fail, sb_arr, sb_enc
local BAND = 17592186044416 -- 2^44: score = band * BAND + arrival seq
local MAX_DECISIONS = 200   -- offers/assignments made by one call
local SCAN = 100            -- waiting conversations looked at per queue
local EXPIRE_BATCH = 200    -- offers / max waits expired per tick
local UNROUTED_GRACE = 2000 -- ms before tick routes what its caller did not


-- ---- JSON out: objects with sorted keys, arrays marked with arr() -----------



local function S(n)
    return string.format('%d', n)
end

local function nz(s)
    if s == nil or s == '' then return NULL end
    return s
end

local function sorted_keys(t)
    local out = arr()
    for k in pairs(t) do out[#out + 1] = k end
    table.sort(out)
    return out
end

-- ---- state of this call -----------------------------------------------------

local AG = {}        -- agent name -> cached state
local CV = {}        -- conversation id -> cached hash fields
local DIRTY = {}     -- queues to dispatch before returning
local QCHANGED = {}  -- queues whose waiting order changed
local COUNTS = {}
local DECISIONS = 0
local MORE = false

local function count(k, n)
    COUNTS[k] = (COUNTS[k] or 0) + (n or 1)
end

local function publish(ev)
    ev.at = NOW
    redis.call('PUBLISH', P .. 'events', enc(ev))
end

-- Same score as ingest.lua: ms * 1000 + seq (clamped to 999).
local function tl_score(id)
    local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
    local s = tonumber(seq)
    if s > 999 then s = 999 end
    return ms .. string.format('%03d', s)
end

local function akey(name)
    return P .. 'rt:agent:' .. name
end

local function qkey(qn, what)
    return P .. 'rt:q:' .. qn .. ':' .. what
end

local function agent(name)
    local a = AG[name]
    if a then return a end
    local c = CFG.a[name]
    local h = redis.call('HMGET', akey(name), 'presence', 'since',
        'idle_since', 'last_offer')
    local pr = h[1]
    if pr ~= 'online' and pr ~= 'away' then pr = 'offline' end
    a = {
        name = name, known = c ~= nil, presence = pr,
        since = tonumber(h[2]) or 0, idle = tonumber(h[3]) or 0,
        last = tonumber(h[4]) or 0,
        active = redis.call('SCARD', akey(name) .. ':convs'),
        offers = redis.call('SCARD', akey(name) .. ':offers'),
        cap = c and c.cap or 0, q = c and c.q or {},
    }
    AG[name] = a
    return a
end

local CONV_F = { 'id', 'customer', 'channel', 'state', 'queue', 'agent',
    'subject', 'created' }
local RT_F = { 'hop', 'band', 'seq', 'queued_at' }

local function conv(id)
    local c = CV[id]
    if c then return c end
    local h = redis.call('HMGET', P .. 'conv:' .. id, unpack(CONV_F))
    if not h[1] then return nil end
    c = {}
    for i, f in ipairs(CONV_F) do c[f] = h[i] or '' end
    local r = redis.call('HMGET', P .. 'rt:conv:' .. id, unpack(RT_F))
    c.hop = r[1] or ''
    c.band = tonumber(r[2])
    c.seq = tonumber(r[3])
    c.queued_at = tonumber(r[4])
    c.offers, c.noffers, c.refused = {}, 0, {}
    local o = redis.call('HGETALL', P .. 'rt:conv:' .. id .. ':offers')
    for i = 1, #o, 2 do
        c.offers[o[i]] = tonumber(o[i + 1]) or 0
        c.noffers = c.noffers + 1
    end
    local rf = redis.call('HGETALL', P .. 'rt:conv:' .. id .. ':refused')
    for i = 1, #rf, 2 do c.refused[rf[i]] = rf[i + 1] end
    CV[id] = c
    return c
end

local function held(c)
    return c.state == 'assigned' or c.state == 'waiting'
end

-- Follow merged_into, as ingest.lua does.
local function resolve_customer(id)
    for _ = 1, 8 do
        if id == '' then return nil end
        local v = redis.call('HMGET', P .. 'cust:' .. id, 'id', 'merged_into')
        if not v[1] then return nil end
        if not v[2] or v[2] == '' then return id end
        id = v[2]
    end
    return nil
end

-- ---- writes -----------------------------------------------------------------

local function log(ctype, c, agentname, text, fields)
    local cid = redis.call('XADD', P .. 'log', '*', 'type', ctype,
        'channel', c.channel, 'direction', 'internal',
        'customer', c.customer, 'conversation', c.id, 'subject', '',
        'text', text, 'source_id', '', 'provider_id', '',
        'agent', agentname or '', 'fields', enc(fields), 'ts', NOWS)
    local score = tl_score(cid)
    if c.customer ~= '' then
        redis.call('ZADD', P .. 'cust:' .. c.customer .. ':tl', score, cid)
    end
    redis.call('ZADD', P .. 'conv:' .. c.id .. ':tl', score, cid)
end

local function set_conv(c, ...)
    redis.call('HSET', P .. 'conv:' .. c.id, ...)
    local t = { ... }
    for i = 1, #t, 2 do c[t[i]] = t[i + 1] end
end

local function set_state(c, st)
    if c.state ~= '' and c.state ~= st then
        redis.call('ZREM', P .. 'rt:st:' .. c.state, c.id)
    end
    redis.call('ZADD', P .. 'rt:st:' .. st, NOWS, c.id)
    set_conv(c, 'state', st, 'updated', NOWS)
end

local function mark_agent(a)
    for _, qn in ipairs(a.q) do DIRTY[qn] = true end
end

-- The agent got work now (an offer or an assignment).
local function got_work(a)
    redis.call('HSET', akey(a.name), 'last_offer', NOWS)
    a.last = NOW
end

local function offer_add(c, name, deadline)
    local a = agent(name)
    got_work(a)
    redis.call('HSET', P .. 'rt:conv:' .. c.id .. ':offers', name, S(deadline))
    redis.call('SADD', akey(name) .. ':offers', c.id)
    redis.call('ZADD', P .. 'rt:offers', S(deadline), c.id .. ' ' .. name)
    c.offers[name] = deadline
    c.noffers = c.noffers + 1
    a.offers = a.offers + 1
end

local function offer_del(c, name)
    local a = agent(name)
    redis.call('HDEL', P .. 'rt:conv:' .. c.id .. ':offers', name)
    if redis.call('SREM', akey(name) .. ':offers', c.id) == 1 then
        a.offers = a.offers - 1
    end
    redis.call('ZREM', P .. 'rt:offers', c.id .. ' ' .. name)
    if c.offers[name] then
        c.offers[name] = nil
        c.noffers = c.noffers - 1
    end
    mark_agent(a)
end

local function refuse(c, name, why)
    redis.call('HSET', P .. 'rt:conv:' .. c.id .. ':refused', name, why)
    c.refused[name] = why
end

-- Withdraw every pending offer of c but `except`'s; the names withdrawn.
local function withdraw_all(c, reason, except)
    local out = arr()
    for _, n in ipairs(sorted_keys(c.offers)) do
        if n ~= except then
            offer_del(c, n)
            out[#out + 1] = n
            publish({ type = 'withdrawn', conversation = c.id, agent = n,
                reason = reason })
        end
    end
    return out
end

-- Leave the waiting order of the conversation's queue (taken or moved).
local function q_leave(c)
    if c.queue ~= '' then
        if redis.call('ZREM', qkey(c.queue, 'wait'), c.id) == 1 then
            QCHANGED[c.queue] = true
        end
        redis.call('ZREM', qkey(c.queue, 'since'), c.id)
    end
    redis.call('ZREM', P .. 'rt:maxwait', c.id)
end

-- Leave the queue's open set (resolved, or moved to another queue).
local function q_close(c)
    if c.queue ~= '' then
        redis.call('ZREM', qkey(c.queue, 'open'), c.id)
    end
end

-- The agent holding c lets go: a slot frees, idle when it was the last.
local function release(c)
    if c.agent == '' or not held(c) then return '' end
    local a = agent(c.agent)
    if redis.call('SREM', akey(c.agent) .. ':convs', c.id) == 1 then
        a.active = a.active - 1
        if a.active <= 0 then
            a.active = 0
            a.idle = NOW
            redis.call('HSET', akey(c.agent), 'idle_since', NOWS)
        end
    end
    mark_agent(a)
    return c.agent
end

-- ---- who may take it --------------------------------------------------------

local function has_skills(q, name)
    if #q.sk == 0 then return true end
    local mine = {}
    local ac = CFG.a[name]
    if ac then for _, s in ipairs(ac.sk) do mine[s] = true end end
    local ms = q.ms[name]
    if ms then for _, s in ipairs(ms) do mine[s] = true end end
    for _, s in ipairs(q.sk) do
        if not mine[s] then return false end
    end
    return true
end

-- nil when `name` may be offered c (in queue q, or as curator when q is
-- nil), else why not.
local function why_not(c, q, name)
    local a = agent(name)
    if not a.known then return 'unknown_agent' end
    if a.presence ~= 'online' then return a.presence end
    if c.refused[name] then return c.refused[name] end
    if c.offers[name] then return 'offered' end
    if a.active + a.offers >= a.cap then return 'at_capacity' end
    if q and not has_skills(q, name) then return 'missing_skill' end
    return nil
end

local function survey(c, qn)
    local q = CFG.q[qn]
    local ok, skipped = arr(), arr()
    for _, m in ipairs(q.m) do
        local why = why_not(c, q, m)
        if why then
            skipped[#skipped + 1] = { agent = m, reason = why }
        else
            ok[#ok + 1] = m
        end
    end
    return ok, skipped
end

local function load(a)
    return a.active + a.offers
end

-- a before b for longest_idle: idle agents (nothing held or offered)
-- first, by the time they became idle; then busy ones by the time they
-- last got work. Load does not count.
local function idler(a, b)
    local ia, ib = load(a) == 0, load(b) == 0
    if ia ~= ib then return ia end
    if ia then return a.idle < b.idle end
    return a.last < b.last
end

-- a before b for least_busy: load (held + offered), then the one who got
-- work least recently.
local function lighter(a, b)
    local la, lb = load(a), load(b)
    if la ~= lb then return la < lb end
    return a.last < b.last
end

-- Choose among eligible members `ok` (in member order): the ones to offer.
local function pick(qn, q, ok)
    if q.st == 'ring_all' and not q.aa then return ok end
    local best
    if q.st == 'round_robin' then
        local last = redis.call('GET', qkey(qn, 'rr'))
        local start, okset = 0, {}
        for i, m in ipairs(q.m) do if m == last then start = i end end
        for _, m in ipairs(ok) do okset[m] = true end
        for i = 1, #q.m do
            local m = q.m[(start + i - 1) % #q.m + 1]
            if okset[m] then best = m break end
        end
        redis.call('SET', qkey(qn, 'rr'), best)
    else
        local better = q.st == 'least_busy' and lighter or idler
        for _, m in ipairs(ok) do
            if not best or better(agent(m), agent(best)) then best = m end
        end
    end
    return arr({ best })
end

-- ---- decisions --------------------------------------------------------------

local function assign(c, name, reason, f)
    local withdrawn = withdraw_all(c, 'taken', name)
    if c.offers[name] then offer_del(c, name) end
    q_leave(c)
    local a = agent(name)
    redis.call('SADD', akey(name) .. ':convs', c.id)
    a.active = a.active + 1
    got_work(a)
    set_conv(c, 'agent', name)
    set_state(c, 'assigned')
    f.action = 'assigned'
    f.reason = reason
    f.agent = name
    f.hop = nz(c.hop)
    f.queue = nz(c.queue)
    f.withdrawn = withdrawn
    log('assignment', c, name, 'assigned to ' .. name .. ' (' .. reason .. ')',
        f)
    publish({ type = 'assigned', conversation = c.id, customer = c.customer,
        agent = name, queue = nz(c.queue), hop = nz(c.hop), reason = reason })
    count('assign:' .. reason)
    DECISIONS = DECISIONS + 1
end

local function deliver(c, qn, ok, skipped)
    local q = CFG.q[qn]
    local picks = pick(qn, q, ok)
    if q.aa then
        return assign(c, picks[1], 'auto', { strategy = q.st, eligible = ok,
            skipped = skipped })
    end
    local deadline = NOW + q.ot
    for _, m in ipairs(picks) do
        offer_add(c, m, deadline)
        publish({ type = 'offer', conversation = c.id, customer = c.customer,
            agent = m, queue = qn, hop = nz(c.hop), expires = deadline })
    end
    log('assignment', c, #picks == 1 and picks[1] or '',
        'offered to ' .. table.concat(picks, ', '),
        { action = 'offer', hop = nz(c.hop), queue = qn, strategy = q.st,
            agents = picks, eligible = ok, skipped = skipped,
            expires = deadline })
    count('offer:' .. c.hop, #picks)
    DECISIONS = DECISIONS + 1
end

-- Put c in queue qn (hop: team, queue, overflow, transfer); f: extra log
-- fields. keep: keep its arrival order and waiting-since (overflow).
local function enqueue(c, qn, hop, f, keep)
    local q = CFG.q[qn]
    q_leave(c)
    if c.queue ~= qn then q_close(c) end
    local seq = c.seq
    if not keep or not seq then seq = redis.call('INCR', P .. 'rt:seq') end
    local since = (keep and c.queued_at) or NOW
    local band = c.band or CFG.nb
    redis.call('ZADD', qkey(qn, 'wait'), S(band * BAND + seq), c.id)
    redis.call('ZADD', qkey(qn, 'since'), S(since), c.id)
    redis.call('ZADD', qkey(qn, 'open'),
        c.created ~= '' and c.created or NOWS, c.id)
    redis.call('SADD', P .. 'rt:queues', qn)
    if q.mw > 0 then
        redis.call('ZADD', P .. 'rt:maxwait', S(NOW + q.mw), c.id)
    end
    redis.call('HSET', P .. 'rt:conv:' .. c.id, 'hop', hop, 'seq', S(seq),
        'queued_at', S(since), 'band', S(band))
    c.hop, c.seq, c.queued_at, c.band = hop, seq, since, band
    set_conv(c, 'queue', qn, 'agent', '')
    set_state(c, 'queued')
    QCHANGED[qn] = true
    DIRTY[qn] = true
    local pos = redis.call('ZRANK', qkey(qn, 'wait'), c.id) + 1
    local ok, skipped = survey(c, qn)
    f.action = 'queued'
    f.hop = hop
    f.queue = qn
    f.position = pos
    f.eligible = ok
    f.skipped = skipped
    log('assignment', c, '', 'queued in ' .. qn .. ' at position ' .. pos, f)
    publish({ type = 'queued', conversation = c.id, customer = c.customer,
        queue = qn, hop = hop, position = pos })
    count('queued:' .. hop)
end

local function offer_curator(c, cur)
    q_leave(c)
    q_close(c)
    set_conv(c, 'queue', '', 'agent', '')
    redis.call('HSET', P .. 'rt:conv:' .. c.id, 'hop', 'curator')
    c.hop = 'curator'
    set_state(c, 'queued')
    local deadline = NOW + CFG.ct
    offer_add(c, cur, deadline)
    log('assignment', c, cur, 'offered to curator ' .. cur,
        { action = 'offer', hop = 'curator', queue = NULL,
            agents = arr({ cur }), eligible = arr({ cur }), skipped = arr(),
            expires = deadline })
    publish({ type = 'offer', conversation = c.id, customer = c.customer,
        agent = cur, queue = NULL, hop = 'curator', expires = deadline })
    count('offer:curator')
    DECISIONS = DECISIONS + 1
end

-- The curator is out (why: declined, timed_out, offline, away,
-- at_capacity): the team queue if someone of it is online, else default.
local function to_team(c, cur, why)
    local ac = CFG.a[cur]
    local team = ac and ac.team or ''
    local tq = team ~= '' and CFG.q[team] or nil
    local why2 = 'no_team'
    if tq then
        for _, m in ipairs(tq.m) do
            local a = agent(m)
            if a.known and a.presence == 'online' and not c.refused[m] then
                return enqueue(c, team, 'team',
                    { curator = cur, curator_reason = why })
            end
        end
        why2 = 'team_unavailable'
    end
    enqueue(c, CFG.dq, 'queue', { curator = cur, curator_reason = why,
        team = nz(team), team_reason = why2, rule = 'default' })
end

-- An offer of c went away; when none is left, c moves on.
local function offer_gone(c, why, name)
    if c.noffers > 0 or c.state ~= 'queued' then return end
    if c.hop == 'curator' then
        to_team(c, name, why)
    elseif c.queue ~= '' then
        DIRTY[c.queue] = true
    end
end

-- ---- rules ------------------------------------------------------------------

-- Lowercase ASCII and Cyrillic (U+0400..U+042F -> U+0450..U+044F /
-- U+0430..U+044F, i.e. the Russian alphabet with Ё); other bytes as is.
local function fold(s)
    s = string.lower(s)
    s = string.gsub(s, '\208([\144-\159])', function(b)
        return '\208' .. string.char(string.byte(b) + 32)
    end)
    s = string.gsub(s, '\208([\160-\175])', function(b)
        return '\209' .. string.char(string.byte(b) - 32)
    end)
    s = string.gsub(s, '\208([\128-\143])', function(b)
        return '\209' .. string.char(string.byte(b) + 16)
    end)
    return s
end

local function has(list, v)
    for _, x in ipairs(list) do if x == v then return true end end
    return false
end

local function locale_ok(list, loc)
    loc = string.lower(loc)
    for _, x in ipairs(list) do
        if loc == x or string.sub(loc, 1, #x + 1) == x .. '-' or
            string.sub(loc, 1, #x + 1) == x .. '_' then
            return true
        end
    end
    return false
end

-- Subject and the first inbound message of c, folded.
local function first_text(c)
    local parts = { c.subject }
    local ids = redis.call('ZRANGE', P .. 'conv:' .. c.id .. ':tl', 0, 9)
    for _, id in ipairs(ids) do
        local e = redis.call('XRANGE', P .. 'log', id, id)
        if e[1] then
            local f, dir, subj, txt = e[1][2], '', '', ''
            for i = 1, #f, 2 do
                if f[i] == 'direction' then dir = f[i + 1] end
                if f[i] == 'subject' then subj = f[i + 1] end
                if f[i] == 'text' then txt = f[i + 1] end
            end
            if dir == 'in' then
                parts[#parts + 1] = subj
                parts[#parts + 1] = string.sub(txt, 1, 65536)
                break
            end
        end
    end
    return fold(table.concat(parts, '\n'))
end

local function choose_rule(c, cust)
    local text
    for _, r in ipairs(CFG.r) do
        local m = true
        if #r.ch > 0 and not has(r.ch, c.channel) then m = false end
        if m and #r.tier > 0 and not has(r.tier, string.lower(cust.tier)) then
            m = false
        end
        if m and #r.loc > 0 and not locale_ok(r.loc, cust.locale) then
            m = false
        end
        if m and #r.tag > 0 then
            local any = false
            for _, t in ipairs(cust.tags) do
                if type(t) == 'string' and has(r.tag, string.lower(t)) then
                    any = true
                end
            end
            m = any
        end
        if m and #r.kw > 0 then
            text = text or first_text(c)
            local any = false
            for _, k in ipairs(r.kw) do
                if string.find(text, fold(k), 1, true) then any = true end
            end
            m = any
        end
        if m then return r.q, r.n end
    end
    return CFG.dq, 'default'
end

local function customer_of(c)
    local cust = { curator = '', tier = '', tags = {}, locale = '' }
    local id = resolve_customer(c.customer)
    if not id then return cust end
    local h = redis.call('HMGET', P .. 'cust:' .. id, 'curator', 'tier',
        'tags', 'locale')
    cust.curator = h[1] or ''
    cust.tier = h[2] or ''
    cust.locale = h[4] or ''
    if h[3] and h[3] ~= '' then
        local ok, t = pcall(cjson.decode, h[3])
        if ok and type(t) == 'table' then cust.tags = t end
    end
    return cust
end

local function route(c)
    local cust = customer_of(c)
    local band = CFG.vip[string.lower(cust.tier)]
    c.band = band or CFG.nb
    local cur = cust.curator
    if cur ~= '' and CFG.a[cur] then
        local why = why_not(c, nil, cur)
        if not why then return offer_curator(c, cur) end
        return to_team(c, cur, why)
    end
    local qn, rule = choose_rule(c, cust)
    local f = { rule = rule }
    if cur ~= '' then
        f.curator = cur
        f.curator_reason = 'unknown_agent'
    end
    enqueue(c, qn, 'queue', f)
end

local function reopen(c)
    set_conv(c, 'resolved', '')
    redis.call('DEL', P .. 'rt:conv:' .. c.id .. ':refused')
    c.refused = {}
    if c.customer ~= '' then
        local ok = true
        local open = redis.call('HGET', P .. 'cust:' .. c.customer .. ':open',
            c.channel)
        if open and open ~= c.id then
            local st = redis.call('HGET', P .. 'conv:' .. open, 'state')
            if st and st ~= 'resolved' then ok = false end
        end
        if ok then
            redis.call('HSET', P .. 'cust:' .. c.customer .. ':open',
                c.channel, c.id)
        end
    end
    set_state(c, 'new')
    log('status', c, '', 'reopened', { action = 'reopened', state = 'new' })
    publish({ type = 'reopened', conversation = c.id, customer = c.customer })
    count('reopened')
end

local function overflow(c)
    local qn = c.queue
    local q = CFG.q[qn]
    local target = q and q.ov or ''
    if target == '' and q and q.team then target = CFG.dq end
    local waited = NOW - (c.queued_at or NOW)
    if target == '' or target == qn or not CFG.q[target] then
        log('assignment', c, '', 'waited past max_wait in ' .. qn,
            { action = 'max_wait', queue = qn, waited = waited,
                overflow = NULL })
        count('max_wait')
        return
    end
    withdraw_all(c, 'max_wait')
    enqueue(c, target, 'overflow', { from = qn, waited = waited }, true)
    count('overflow')
end

-- ---- dispatch ---------------------------------------------------------------

local function has_free(q)
    for _, m in ipairs(q.m) do
        local a = agent(m)
        if a.known and a.presence == 'online' and load(a) < a.cap then
            return true
        end
    end
    return false
end

local function dispatch_queue(qn)
    local q = CFG.q[qn]
    if not has_free(q) then return end
    local ids = redis.call('ZRANGE', qkey(qn, 'wait'), 0, SCAN - 1)
    for _, id in ipairs(ids) do
        if DECISIONS >= MAX_DECISIONS then
            MORE = true
            return
        end
        local c = conv(id)
        if not c or c.state ~= 'queued' or c.queue ~= qn then
            redis.call('ZREM', qkey(qn, 'wait'), id)
            redis.call('ZREM', qkey(qn, 'since'), id)
            QCHANGED[qn] = true
        elseif c.noffers == 0 then
            local ok, skipped = survey(c, qn)
            if #ok > 0 then
                deliver(c, qn, ok, skipped)
                if not has_free(q) then return end
            end
        end
    end
end

-- Dispatch the dirty queues, the one with the best head first (so an agent
-- in several queues takes the longest-waiting conversation).
local function dispatch()
    local list = {}
    for qn in pairs(DIRTY) do
        if CFG.q[qn] then
            local h = redis.call('ZRANGE', qkey(qn, 'wait'), 0, 0,
                'WITHSCORES')
            if h[1] then list[#list + 1] = { qn, tonumber(h[2]) } end
        end
    end
    DIRTY = {}
    table.sort(list, function(x, y)
        if x[2] ~= y[2] then return x[2] < y[2] end
        return x[1] < y[1]
    end)
    for _, e in ipairs(list) do dispatch_queue(e[1]) end
end

local function publish_positions()
    for _, qn in ipairs(sorted_keys(QCHANGED)) do
        local ids = redis.call('ZRANGE', qkey(qn, 'wait'), 0, 49)
        publish({ type = 'positions', queue = qn, conversations = arr(ids),
            waiting = redis.call('ZCARD', qkey(qn, 'wait')) })
    end
end

local function snapshot(c, routed)
    local pos = NULL
    if c.state == 'queued' and c.queue ~= '' then
        local r = redis.call('ZRANK', qkey(c.queue, 'wait'), c.id)
        if r then pos = r + 1 end
    end
    local ag = NULL
    if (held(c) or c.state == 'resolved') and c.agent ~= '' then
        ag = c.agent
    end
    return { id = c.id, state = c.state, queue = nz(c.queue), agent = ag,
        hop = nz(c.hop), position = pos, offers = sorted_keys(c.offers),
        routed = routed ~= false }
end

local function agent_view(a)
    local convs = redis.call('SMEMBERS', akey(a.name) .. ':convs')
    local offers = redis.call('SMEMBERS', akey(a.name) .. ':offers')
    table.sort(convs)
    table.sort(offers)
    return { name = a.name, presence = a.presence, since = a.since,
        idle_since = a.idle, active = a.active, capacity = a.cap,
        conversations = arr(convs), offers = arr(offers) }
end

-- ---- operations -------------------------------------------------------------

local function need_conv(id)
    if not string.match(id or '', '^cv_%d+$') then
        fail('NOTFOUND', 'no such conversation')
    end
    local c = conv(id)
    if not c then fail('NOTFOUND', 'no such conversation') end
    return c
end

local function need_agent(name)
    if name == nil or name == '' or not CFG.a[name] then
        fail('NOTFOUND', 'no such agent')
    end
    return agent(name)
end

local function check_by(by)
    if #by > 128 or not string.match(by, '^[%w_.:@-]*$') then
        fail('INVALID', 'by must be a user or key id')
    end
    return by
end

local function op_route(reopening)
    local c = need_conv(ARGV[5])
    if reopening and c.state ~= 'resolved' then
        fail('CONFLICT', 'conversation is not resolved')
    end
    if CFG.dq == '' then return snapshot(c, false) end
    redis.call('ZREM', P .. 'rt:unrouted', c.id)
    if c.state ~= 'new' and c.state ~= 'resolved' then
        return snapshot(c)
    end
    if c.state == 'resolved' then reopen(c) end
    route(c)
    dispatch()
    return snapshot(c)
end

local function op_presence()
    local name, st = ARGV[5], ARGV[6]
    if st ~= 'online' and st ~= 'away' and st ~= 'offline' then
        fail('INVALID', 'presence must be online, away or offline')
    end
    local a = need_agent(name)
    local prev = a.presence
    if prev ~= st then
        redis.call('HSET', akey(name), 'presence', st, 'since', NOWS)
        a.presence, a.since = st, NOW
    end
    if st == 'online' then
        if prev ~= 'online' and a.active == 0 then
            redis.call('HSET', akey(name), 'idle_since', NOWS)
            a.idle = NOW
        end
        mark_agent(a)
    else
        local ids = redis.call('SMEMBERS', akey(name) .. ':offers')
        table.sort(ids)
        for _, id in ipairs(ids) do
            local c = conv(id)
            if c and c.offers[name] then
                offer_del(c, name)
                publish({ type = 'withdrawn', conversation = c.id,
                    agent = name, reason = st })
                log('assignment', c, name,
                    'offer to ' .. name .. ' withdrawn (' .. st .. ')',
                    { action = 'withdrawn', agent = name, reason = st,
                        hop = nz(c.hop), queue = nz(c.queue) })
                offer_gone(c, st, name)
            else
                redis.call('SREM', akey(name) .. ':offers', id)
                a.offers = a.offers - 1
            end
        end
    end
    if prev ~= st then
        publish({ type = 'presence', agent = name, presence = st,
            previous = prev })
    end
    dispatch()
    return agent_view(a)
end

local function op_accept()
    local c = need_conv(ARGV[5])
    local name = ARGV[6]
    local a = need_agent(name)
    if held(c) and c.agent == name then return snapshot(c) end
    if c.state == 'resolved' then
        fail('CONFLICT', 'conversation is resolved')
    end
    local d = c.offers[name]
    if not d then fail('CONFLICT', 'no pending offer') end
    if d < NOW then fail('CONFLICT', 'offer expired') end
    if a.active >= a.cap then fail('CONFLICT', 'at capacity') end
    assign(c, name, 'accepted', {})
    dispatch()
    return snapshot(c)
end

local function op_decline()
    local c = need_conv(ARGV[5])
    local name = ARGV[6]
    need_agent(name)
    if not c.offers[name] then fail('CONFLICT', 'no pending offer') end
    offer_del(c, name)
    refuse(c, name, 'declined')
    publish({ type = 'withdrawn', conversation = c.id, agent = name,
        reason = 'declined' })
    log('assignment', c, name, 'declined by ' .. name,
        { action = 'declined', agent = name, hop = nz(c.hop),
            queue = nz(c.queue) })
    count('decline')
    offer_gone(c, 'declined', name)
    dispatch()
    return snapshot(c)
end

local function op_transfer()
    local c = need_conv(ARGV[5])
    local to_agent, to_queue = ARGV[6], ARGV[7]
    local by = check_by(ARGV[8])
    if (to_agent == '') == (to_queue == '') then
        fail('INVALID', 'give exactly one of agent and queue')
    end
    if c.state == 'resolved' then
        fail('CONFLICT', 'conversation is resolved')
    end
    if to_agent ~= '' then
        local a = need_agent(to_agent)
        if a.presence ~= 'online' then
            fail('CONFLICT', 'agent is ' .. a.presence)
        end
        if held(c) and c.agent == to_agent then
            fail('CONFLICT', 'already assigned to this agent')
        end
        local l = load(a)
        if c.offers[to_agent] then l = l - 1 end
        if l >= a.cap then fail('CONFLICT', 'at capacity') end
    elseif not CFG.q[to_queue] then
        fail('NOTFOUND', 'no such queue')
    end
    local from = release(c)
    if from ~= '' then refuse(c, from, 'transferred') end
    local f = { from = nz(from), by = nz(by) }
    redis.call('HSET', P .. 'rt:conv:' .. c.id, 'hop', 'transfer')
    c.hop = 'transfer'
    if to_agent ~= '' then
        withdraw_all(c, 'transfer', to_agent)
        assign(c, to_agent, 'transfer', f)
    else
        withdraw_all(c, 'transfer')
        if c.band == nil then c.band = CFG.nb end
        enqueue(c, to_queue, 'transfer', f)
    end
    dispatch()
    return snapshot(c)
end

local function op_resolve()
    local c = need_conv(ARGV[5])
    local by = check_by(ARGV[6])
    if c.state == 'resolved' then
        fail('CONFLICT', 'conversation is already resolved')
    end
    local who = held(c) and c.agent or ''
    local withdrawn = withdraw_all(c, 'resolved')
    release(c)
    q_leave(c)
    q_close(c)
    set_conv(c, 'resolved', NOWS)
    set_state(c, 'resolved')
    if c.customer ~= '' then
        local k = P .. 'cust:' .. c.customer .. ':open'
        if redis.call('HGET', k, c.channel) == c.id then
            redis.call('HDEL', k, c.channel)
        end
    end
    redis.call('DEL', P .. 'rt:conv:' .. c.id .. ':refused')
    c.refused = {}
    log('status', c, who, 'resolved',
        { action = 'resolved', state = 'resolved', by = nz(by),
            agent = nz(who), withdrawn = withdrawn })
    publish({ type = 'resolved', conversation = c.id, customer = c.customer,
        agent = nz(who), by = nz(by) })
    count('resolved')
    dispatch()
    return snapshot(c)
end

local function op_tick()
    local timeouts, overflows = 0, 0
    local due = redis.call('ZRANGEBYSCORE', P .. 'rt:offers', '-inf', NOWS,
        'LIMIT', 0, EXPIRE_BATCH)
    if #due == EXPIRE_BATCH then MORE = true end
    for _, m in ipairs(due) do
        redis.call('ZREM', P .. 'rt:offers', m)
        local id, name = string.match(m, '^(cv_%d+) (.+)$')
        local c = id and conv(id)
        if c and c.offers[name] and c.offers[name] <= NOW then
            offer_del(c, name)
            refuse(c, name, 'timed_out')
            publish({ type = 'withdrawn', conversation = c.id, agent = name,
                reason = 'timed_out' })
            log('assignment', c, name, 'offer to ' .. name .. ' timed out',
                { action = 'timed_out', agent = name, hop = nz(c.hop),
                    queue = nz(c.queue) })
            count('timeout')
            timeouts = timeouts + 1
            offer_gone(c, 'timed_out', name)
        end
    end
    due = redis.call('ZRANGEBYSCORE', P .. 'rt:maxwait', '-inf', NOWS,
        'LIMIT', 0, EXPIRE_BATCH)
    if #due == EXPIRE_BATCH then MORE = true end
    for _, id in ipairs(due) do
        redis.call('ZREM', P .. 'rt:maxwait', id)
        local c = conv(id)
        if c and c.state == 'queued' and c.queue ~= '' then
            overflow(c)
            overflows = overflows + 1
        end
    end
    -- Conversations ingest marked as needing an agent that nobody routed
    -- (the caller crashed or Redis failed between ingest and route).
    if CFG.dq ~= '' then
        due = redis.call('ZRANGEBYSCORE', P .. 'rt:unrouted', '-inf',
            S(NOW - UNROUTED_GRACE), 'LIMIT', 0, EXPIRE_BATCH)
        if #due == EXPIRE_BATCH then MORE = true end
        for _, id in ipairs(due) do
            redis.call('ZREM', P .. 'rt:unrouted', id)
            local c = conv(id)
            if c and (c.state == 'new' or c.state == 'resolved') then
                if c.state == 'resolved' then reopen(c) end
                route(c)
            end
        end
    end
    -- Queues gone from the config: their waiting conversations go to the
    -- default queue, keeping their order.
    for _, qn in ipairs(redis.call('SMEMBERS', P .. 'rt:queues')) do
        if not CFG.q[qn] and CFG.dq ~= '' then
            local ids = redis.call('ZRANGE', qkey(qn, 'wait'), 0, SCAN - 1)
            for _, id in ipairs(ids) do
                local c = conv(id)
                if c and c.state == 'queued' and c.queue == qn then
                    withdraw_all(c, 'queue_removed')
                    enqueue(c, CFG.dq, 'queue',
                        { from = qn, rule = 'default',
                            reason = 'queue_removed' }, true)
                else
                    redis.call('ZREM', qkey(qn, 'wait'), id)
                end
            end
            if redis.call('ZCARD', qkey(qn, 'wait')) == 0 then
                redis.call('SREM', P .. 'rt:queues', qn)
            end
        end
    end
    for qn in pairs(CFG.q) do DIRTY[qn] = true end
    dispatch()
    return { timeouts = timeouts, overflows = overflows,
        decisions = DECISIONS, more = MORE }
end

local OPS = {
    route = function() return op_route(false) end,
    reopen = function() return op_route(true) end,
    presence = op_presence,
    accept = op_accept,
    decline = op_decline,
    transfer = op_transfer,
    resolve = op_resolve,
    tick = op_tick,
}

local NARGS = { route = 5, reopen = 5, presence = 6, accept = 6, decline = 6,
    transfer = 8, resolve = 6, tick = 4 }

local function main()
    if P == nil or P == '' then fail('INVALID', 'prefix is required') end
    if not OPS[OP] then fail('INVALID', 'unknown operation') end
    if #ARGV ~= NARGS[OP] then fail('INVALID', 'argument count') end
    if not string.match(NOWS, '^%d+$') or #NOWS > 15 then
        fail('INVALID', 'now must be milliseconds')
    end
    NOW = tonumber(NOWS)
    local ok, cfg = pcall(cjson.decode, ARGV[4])
    if not ok or type(cfg) ~= 'table' or type(cfg.q) ~= 'table' or
        type(cfg.a) ~= 'table' or type(cfg.r) ~= 'table' then
        fail('INVALID', 'routing config')
    end
    CFG = cfg
    local res = OPS[OP]()
    publish_positions()
    return res
end

return sb_run(function() local res = main() return { enc(res), enc(COUNTS) } end)
