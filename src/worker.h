/* worker.h - a bounded pool for blocking work (argon2id hashing, big MIME
 * parses) on libuv's thread pool.
 *
 * work() runs on a pool thread and must touch no loop state; after() runs on
 * the loop thread exactly once, with cancelled = 1 when the job was cancelled
 * before it started (shutdown). At most max_queued jobs wait or run at once:
 * beyond that sb_worker_submit refuses, so a flood of logins cannot queue
 * unbounded memory-hard hashes.
 */
#ifndef SB_WORKER_H
#define SB_WORKER_H

#include <stddef.h>
#include <uv.h>

typedef void sb_work_fn(void *arg);
typedef void sb_after_fn(void *arg, int cancelled);

void sb_worker_init(uv_loop_t *loop, size_t max_queued);

/* 0 accepted (after() will run exactly once), -1 refused (queue full or
 * shutting down: after() will not run). arg is the caller's. */
int sb_worker_submit(sb_work_fn *work, sb_after_fn *after, void *arg);

size_t sb_worker_inflight(void);

/* Cancel jobs not yet started; running ones finish. */
void sb_worker_shutdown(void);

#endif
