-- customer_update.lua - partial update of a customer's profile.
--
-- ARGV: 1 prefix, 2 customer id, 3 patch (JSON object) with any of
--   name, locale, timezone, tier, curator: string, or null to clear;
--   tags: array of strings (replaces the list);
--   preferences: {"order": [channel, ...] (replaces),
--                 "opt_out": {channel: {"at":ms,"source":".."} | true
--                             (recorded now) | null/false (removed)},
--                 "opt_in": {channel: true} (removes that opt-out),
--                 "quiet_hours": {"from":"22:00","to":"08:00"} | null};
--   identities: {"email": [...], "phone": [...], "chat": [...]} to add,
--     already normalised.
-- A merged id updates the surviving customer. Everything is checked before
-- the first write. Returns what customer_get.lua returns.
-- Errors: "NOTFOUND ...", "INVALID ...", "CONFLICT identity ..." when an
-- identity belongs to another customer (nothing is written then).

local P = ARGV[1]
local function resolve(id) return sb_resolve(P, id) end -- common.lua
local fail = sb_fail



-- A decoded JSON array: a table whose keys are exactly 1..n.
local function is_array(t)
    if type(t) ~= 'table' then return false end
    local n = 0
    for _ in pairs(t) do n = n + 1 end
    for i = 1, n do
        if t[i] == nil then return false end
    end
    return true
end

-- cjson encodes an empty table as {}: arrays need this.
local function enc_array(t)
    if #t == 0 then return '[]' end
    return cjson.encode(t)
end

local function str_list(name, t, maxn, maxlen, pattern)
    if not is_array(t) then fail('INVALID', name .. ' must be an array') end
    if #t > maxn then fail('INVALID', name .. ': too many') end
    local out, seen = {}, {}
    for _, v in ipairs(t) do
        if type(v) ~= 'string' or v == '' or #v > maxlen or
            (pattern and not string.match(v, pattern)) then
            fail('INVALID', name .. ': bad element')
        end
        if not seen[v] then
            seen[v] = true
            out[#out + 1] = v
        end
    end
    return out
end

-- "HH:MM", 00:00..23:59.
local function hhmm(s)
    local h, m = string.match(s, '^(%d%d):(%d%d)$')
    return h and tonumber(h) < 24 and tonumber(m) < 60
end

local STRINGS = { name = 256, locale = 16, timezone = 64, tier = 32,
                  curator = 128 }
local IDENT_TYPES = { email = true, phone = true, chat = true }
local CHANNEL = '^[a-z][a-z0-9_-]*$'

local function main()
    if not string.match(ARGV[2], '^cu_%d+$') then
        fail('NOTFOUND', 'no such customer')
    end
    local cust = resolve(ARGV[2])
    if not cust then fail('NOTFOUND', 'no such customer') end
    local key = P .. 'cust:' .. cust
    local ok, patch = pcall(cjson.decode, ARGV[3])
    if not ok or type(patch) ~= 'table' or
        not string.match(ARGV[3], '^%s*{') then
        fail('INVALID', 'patch must be a JSON object')
    end

    local sets = {}
    local idents = {}
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    for k, v in pairs(patch) do
        if STRINGS[k] then
            if v == cjson.null then v = '' end
            if type(v) ~= 'string' or #v > STRINGS[k] then
                fail('INVALID', k .. ' must be a string of at most ' ..
                    STRINGS[k] .. ' bytes')
            end
            sets[#sets + 1] = k
            sets[#sets + 1] = v
        elseif k == 'tags' then
            sets[#sets + 1] = 'tags'
            sets[#sets + 1] = enc_array(str_list('tags', v, 64, 64))
        elseif k == 'preferences' then
            if type(v) ~= 'table' or is_array(v) and next(v) ~= nil then
                fail('INVALID', 'preferences must be an object')
            end
            local okp, cur = pcall(cjson.decode,
                redis.call('HGET', key, 'prefs') or '{}')
            if not okp or type(cur) ~= 'table' then cur = {} end
            local order = cur.order
            if not is_array(order) then order = {} end
            local opt_out = cur.opt_out
            if type(opt_out) ~= 'table' then opt_out = {} end
            local quiet = cur.quiet_hours
            if type(quiet) ~= 'table' then quiet = nil end
            for pk, pv in pairs(v) do
                if pk == 'order' then
                    order = str_list('preferences.order', pv, 16, 32, CHANNEL)
                elseif pk == 'opt_out' then
                    if type(pv) ~= 'table' or is_array(pv) and next(pv) then
                        fail('INVALID', 'preferences.opt_out must be an object')
                    end
                    for ch, o in pairs(pv) do
                        if type(ch) ~= 'string' or not string.match(ch, CHANNEL)
                            or #ch > 32 then
                            fail('INVALID', 'preferences.opt_out: bad channel')
                        end
                        if o == cjson.null or o == false then
                            opt_out[ch] = nil
                        elseif o == true then
                            opt_out[ch] = { at = now }
                        elseif type(o) == 'table' and not is_array(o) then
                            if o.at == nil then o.at = now end
                            opt_out[ch] = o
                        else
                            fail('INVALID', 'preferences.opt_out.' .. ch ..
                                ' must be an object, true or null')
                        end
                    end
                elseif pk == 'opt_in' then
                    -- {channel: true}: subscribed again (the opt-out goes)
                    if type(pv) ~= 'table' or is_array(pv) and next(pv) then
                        fail('INVALID', 'preferences.opt_in must be an object')
                    end
                    for ch, o in pairs(pv) do
                        if type(ch) ~= 'string' or o ~= true then
                            fail('INVALID', 'preferences.opt_in.<channel> ' ..
                                'must be true')
                        end
                        opt_out[ch] = nil
                    end
                elseif pk == 'quiet_hours' then
                    if pv == cjson.null or pv == false then
                        quiet = nil
                    elseif type(pv) == 'table' and type(pv.from) == 'string'
                        and type(pv.to) == 'string' and hhmm(pv.from) and
                        hhmm(pv.to) then
                        quiet = { from = pv.from, to = pv.to }
                    else
                        fail('INVALID', 'preferences.quiet_hours must be ' ..
                            '{"from":"HH:MM","to":"HH:MM"} or null')
                    end
                else
                    fail('INVALID', 'preferences: unknown field ' ..
                        tostring(pk))
                end
            end
            local oo = '{}'
            if next(opt_out) ~= nil then oo = cjson.encode(opt_out) end
            sets[#sets + 1] = 'prefs'
            local qh = ''
            if quiet then qh = ',"quiet_hours":' .. cjson.encode(quiet) end
            sets[#sets + 1] = '{"order":' .. enc_array(order) ..
                ',"opt_out":' .. oo .. qh .. '}'
        elseif k == 'identities' then
            if type(v) ~= 'table' or is_array(v) and next(v) ~= nil then
                fail('INVALID', 'identities must be an object')
            end
            for ty, list in pairs(v) do
                if not IDENT_TYPES[ty] then
                    fail('INVALID', 'identities: type must be email, phone '
                        .. 'or chat')
                end
                for _, val in ipairs(str_list('identities.' .. ty, list, 32,
                    512)) do
                    idents[#idents + 1] = ty .. ':' .. val
                end
            end
        else
            fail('INVALID', 'unknown field ' .. tostring(k))
        end
    end

    local add = {}
    for _, ident in ipairs(idents) do
        local o = redis.call('HGET', P .. 'identity', ident)
        if o then o = resolve(o) end
        if o and o ~= cust then
            fail('CONFLICT', 'identity ' .. ident ..
                ' belongs to another customer')
        end
        if not o then add[#add + 1] = ident end
    end

    for _, ident in ipairs(add) do
        redis.call('HSET', P .. 'identity', ident, cust)
        redis.call('SADD', key .. ':ids', ident)
    end
    sets[#sets + 1] = 'updated'
    sets[#sets + 1] = now
    redis.call('HSET', key, unpack(sets))
    return { redis.call('HGETALL', key), redis.call('SMEMBERS', key .. ':ids') }
end

return sb_run(main)
