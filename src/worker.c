/* worker.c - a bounded pool for blocking work on libuv's thread pool.
 *
 * A thin layer over uv_queue_work that adds the two things the daemon needs:
 * a hard bound on jobs waiting or running (a flood of logins must not queue
 * unbounded argon2id hashes) and a shutdown that cancels the jobs that have
 * not started. Each accepted job sits on a list owned by the loop thread
 * until its after() has run, so shutdown can find and cancel it; libuv then
 * delivers the after callback with UV_ECANCELED, which we pass on as
 * cancelled = 1. Everything but the work function runs on the loop thread.
 */
#include "worker.h"

#include <stdlib.h>

#include "log.h"
#include "util.h"

struct worker_job {
    uv_work_t req;
    sb_work_fn *work;
    sb_after_fn *after;
    void *arg;
    struct worker_job *prev;
    struct worker_job *next;
};

static struct {
    uv_loop_t *loop;
    size_t max_queued;
    size_t inflight;
    int shutting_down;
    struct worker_job *head; /* accepted jobs whose after() is pending */
} wk;

static void job_unlink(struct worker_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        wk.head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    j->prev = j->next = NULL;
}

/* On a pool thread: only the caller's work function, no loop state. */
static void job_work(uv_work_t *req)
{
    struct worker_job *j = req->data;

    j->work(j->arg);
}

static void job_after(uv_work_t *req, int status)
{
    struct worker_job *j = req->data;
    sb_after_fn *after = j->after;
    void *arg = j->arg;

    job_unlink(j);
    wk.inflight--;
    free(j);
    if (after)
        after(arg, status == UV_ECANCELED);
}

void sb_worker_init(uv_loop_t *loop, size_t max_queued)
{
    if (wk.inflight)
        SB_WARN("core.worker", "re-initialised with jobs in flight n=%zu",
                wk.inflight);
    wk.loop = loop;
    wk.max_queued = max_queued;
    wk.shutting_down = 0;
}

int sb_worker_submit(sb_work_fn *work, sb_after_fn *after, void *arg)
{
    struct worker_job *j;
    int rc;

    if (!wk.loop || wk.shutting_down || !work)
        return -1;
    if (wk.inflight >= wk.max_queued)
        return -1;
    j = sb_calloc(1, sizeof(*j));
    j->req.data = j;
    j->work = work;
    j->after = after;
    j->arg = arg;
    rc = uv_queue_work(wk.loop, &j->req, job_work, job_after);
    if (rc < 0) {
        SB_ERR("core.worker", "uv_queue_work failed err=%s", uv_strerror(rc));
        free(j);
        return -1;
    }
    j->next = wk.head;
    if (wk.head)
        wk.head->prev = j;
    wk.head = j;
    wk.inflight++;
    return 0;
}

size_t sb_worker_inflight(void)
{
    return wk.inflight;
}

/* uv_cancel succeeds only for a job still waiting in the pool's queue; the
 * loop then runs its after callback with UV_ECANCELED. Running jobs answer
 * UV_EBUSY and complete normally. Nothing is freed here: every job is freed
 * by its after callback, so the list stays valid while we walk it. */
void sb_worker_shutdown(void)
{
    size_t cancelled = 0;

    if (wk.shutting_down)
        return;
    wk.shutting_down = 1;
    for (struct worker_job *j = wk.head; j; j = j->next)
        if (uv_cancel((uv_req_t *)&j->req) == 0)
            cancelled++;
    if (wk.inflight)
        SB_INFO("core.worker", "shutdown cancelled=%zu running=%zu", cancelled,
                wk.inflight - cancelled);
}
