-- count.lua - wrk script for plain GET targets (/healthz, nginx): counts
-- answers by status class and prints the same BENCH line as contacts.lua
--   BENCH rps=R p50_us=N p99_us=N ok=N non2xx=N errors=N sent=0
-- so every target pays the same Lua cost in wrk.

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    ok = 0
    bad = 0
end

function response(status, headers, body)
    if status >= 200 and status < 300 then
        ok = ok + 1
    else
        bad = bad + 1
    end
end

function done(summary, latency, requests)
    local tok, tbad = 0, 0
    for _, t in ipairs(threads) do
        tok = tok + (t:get("ok") or 0)
        tbad = tbad + (t:get("bad") or 0)
    end
    local e = summary.errors
    io.write(string.format(
        "BENCH rps=%.1f p50_us=%d p99_us=%d ok=%d non2xx=%d errors=%d " ..
        "sent=0\n",
        summary.requests / (summary.duration / 1e6),
        latency:percentile(50), latency:percentile(99), tok, tbad,
        e.connect + e.read + e.write + e.timeout))
end
