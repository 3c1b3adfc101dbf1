-- common.lua - functions every script may use. scripts/embed-lua.sh puts
-- the files of src/lua/lib/ in front of each script, so these are locals of
-- every script (Redis forbids globals) and no script keeps its own copy.

-- Abort the script with a classified error ("NOTFOUND ...", "CONFLICT ...",
-- "INVALID ..."); a script's main function runs under pcall and turns it
-- into redis.error_reply.
local function sb_fail(kind, msg)
    error({sb = kind .. ' ' .. msg}, 0)
end

-- Run main under pcall: a classified error becomes an error reply, any
-- other error is raised as it is.
local function sb_run(main)
    local ok, res = pcall(main)
    if ok then return res end
    if type(res) == 'table' and res.sb then
        return redis.error_reply(res.sb)
    end
    error(res, 0)
end

-- Follow a customer's merged_into chain (at most 8 hops): the surviving
-- customer id, or nil when the customer does not exist.
local function sb_resolve(prefix, id)
    for _ = 1, 8 do
        local v = redis.call('HMGET', prefix .. 'cust:' .. id, 'id',
            'merged_into')
        if not v[1] then return nil end
        if not v[2] or v[2] == '' then return id end
        id = v[2]
    end
    return nil
end

-- JSON with explicit arrays and nulls (cjson cannot tell an empty array
-- from an empty object): mark arrays with sb_arr(), use SB_NULL for null.
local SB_NULL = {}
local SB_ARR = {}

local function sb_arr(t)
    return setmetatable(t or {}, SB_ARR)
end

local function sb_enc(v)
    if v == nil or v == SB_NULL then return 'null' end
    local t = type(v)
    if t == 'string' then return cjson.encode(v) end
    if t == 'number' then
        if v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then
            return string.format('%d', v)
        end
        return cjson.encode(v)
    end
    if t == 'boolean' then return v and 'true' or 'false' end
    local out = {}
    if getmetatable(v) == SB_ARR then
        for i = 1, #v do out[i] = sb_enc(v[i]) end
        return '[' .. table.concat(out, ',') .. ']'
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    for i, k in ipairs(keys) do
        out[i] = cjson.encode(k) .. ':' .. sb_enc(v[k])
    end
    return '{' .. table.concat(out, ',') .. '}'
end
