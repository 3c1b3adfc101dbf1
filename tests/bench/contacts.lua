-- contacts.lua - wrk script: POST /api/v1/contacts, one valid contact per
-- request with a source_id unique across threads and runs, the API key from
-- $SB_BENCH_KEY. Counts answers by status class and prints one line
--   BENCH rps=R p50_us=N p99_us=N ok=N non2xx=N errors=N sent=N
-- for tests/bench/bench.sh to parse. $SB_BENCH_RUN tells runs apart.
-- "sent" counts requests built; when the duration ends wrk drops the ones
-- still in flight, so the daemon may have stored up to -c more than "ok".

local key = os.getenv("SB_BENCH_KEY") or ""
local run = os.getenv("SB_BENCH_RUN") or tostring(os.time())
local threads = {}
local nthreads = 0

function setup(thread)
    nthreads = nthreads + 1
    thread:set("tid", nthreads)
    table.insert(threads, thread)
end

function init(args)
    n = 0
    ok = 0
    bad = 0
    prefix = "bench-" .. run .. "-" .. tostring(tid) .. "-"
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Authorization"] = "Bearer " .. key
end

function request()
    n = n + 1
    local body = string.format(
        '{"channel":"api","direction":"in","email":"b%d@bench.example.com",' ..
        '"subject":"bench","text":"order %d shipped","conversation":"none",' ..
        '"source_id":"%s%d","fields":{"order":%d}}',
        n % 1000, n, prefix, n, n)
    return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
    if status >= 200 and status < 300 then
        ok = ok + 1
    else
        bad = bad + 1
    end
end

function done(summary, latency, requests)
    local tok, tbad, tsent = 0, 0, 0
    for _, t in ipairs(threads) do
        tok = tok + (t:get("ok") or 0)
        tbad = tbad + (t:get("bad") or 0)
        tsent = tsent + (t:get("n") or 0)
    end
    local e = summary.errors
    io.write(string.format(
        "BENCH rps=%.1f p50_us=%d p99_us=%d ok=%d non2xx=%d errors=%d " ..
        "sent=%d\n",
        summary.requests / (summary.duration / 1e6),
        latency:percentile(50), latency:percentile(99), tok, tbad,
        e.connect + e.read + e.write + e.timeout, tsent))
end
