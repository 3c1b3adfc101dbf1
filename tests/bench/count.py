#!/usr/bin/python3
"""count.py - exact acknowledged-vs-stored count for bench.sh (stdlib only).

    count.py PORT KEY N THREADS

POSTs N valid contacts (unique source_id) over THREADS keep-alive
connections, waiting for every answer, and prints
    COUNT posted=N ok=M other=K errors=E
where ok counts 2xx answers. bench.sh compares ok with the growth of
XLEN sb:log, which must be equal: unlike wrk, nothing is left in flight.
"""

import http.client
import json
import sys
import threading
import time


def main():
    port, key, total, nthreads = (int(sys.argv[1]), sys.argv[2],
                                  int(sys.argv[3]), int(sys.argv[4]))
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "other": 0, "errors": 0}
    run = "%d" % (time.time() * 1000)

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        hdrs = {"Authorization": "Bearer " + key,
                "Content-Type": "application/json"}
        while True:
            with lock:
                i = state["next"]
                if i >= total:
                    break
                state["next"] += 1
            body = json.dumps({"channel": "api", "conversation": "none",
                               "email": "c%d@bench.example.com" % (i % 100),
                               "text": "count %d" % i,
                               "source_id": "count-%s-%d" % (run, i)})
            try:
                conn.request("POST", "/api/v1/contacts", body, hdrs)
                r = conn.getresponse()
                r.read()
                key_ = "ok" if 200 <= r.status < 300 else "other"
            except (OSError, http.client.HTTPException):
                conn.close()
                key_ = "errors"
            with lock:
                state[key_] += 1
        conn.close()

    ts = [threading.Thread(target=worker) for _ in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    print("COUNT posted=%d ok=%d other=%d errors=%d" % (
        state["next"], state["ok"], state["other"], state["errors"]))


if __name__ == "__main__":
    main()
