/* test_worker.c - unit tests for the bounded worker pool.
 *
 * Runs jobs on the real libuv thread pool (pinned to 4 threads) and checks
 * the contract: after() exactly once per accepted job, refusal past the
 * bound and after shutdown, and cancellation of queued jobs while every pool
 * thread is busy. Every wait is bounded; alarm() is the last resort.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "worker.h"

#define POOL_THREADS 4

struct job {
    atomic_int work_ran;
    int after_calls;
    int cancelled;
    sem_t *wait_on; /* work blocks on this when set */
    sem_t *started; /* work posts this first when set */
    int resubmit;   /* after() submits a follow-up this many times */
    int *chain_done;
};

static int sem_wait_s(sem_t *s, int seconds)
{
    struct timespec ts;
    int rc;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += seconds;
    do
        rc = sem_timedwait(s, &ts);
    while (rc < 0 && errno == EINTR);
    return rc;
}

static void job_work(void *arg)
{
    struct job *j = arg;

    if (j->started)
        sem_post(j->started);
    if (j->wait_on)
        sem_wait_s(j->wait_on, 20);
    atomic_fetch_add(&j->work_ran, 1);
}

static void job_after(void *arg, int cancelled)
{
    struct job *j = arg;

    j->after_calls++;
    j->cancelled = cancelled;
    if (j->resubmit > 0) {
        j->resubmit--;
        (*j->chain_done)++;
        assert_int_equal(sb_worker_submit(job_work, job_after, j), 0);
    }
}

static void run_loop(uv_loop_t *loop)
{
    /* only work requests keep the loop alive: it returns once all ran */
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
}

static void test_runs_each_once(void **state)
{
    enum { N = 64 };
    static struct job jobs[N];
    uv_loop_t loop;

    assert_int_equal(uv_loop_init(&loop), 0);
    sb_worker_init(&loop, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(sb_worker_submit(job_work, job_after, &jobs[i]), 0);
    assert_int_equal(sb_worker_inflight(), N);
    /* after() runs on the loop, never inside submit */
    for (int i = 0; i < N; i++)
        assert_int_equal(jobs[i].after_calls, 0);
    run_loop(&loop);
    for (int i = 0; i < N; i++) {
        assert_int_equal(atomic_load(&jobs[i].work_ran), 1);
        assert_int_equal(jobs[i].after_calls, 1);
        assert_int_equal(jobs[i].cancelled, 0);
    }
    assert_int_equal(sb_worker_inflight(), 0);
    sb_worker_shutdown();
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_refuses_past_bound(void **state)
{
    static struct job jobs[4], late;
    uv_loop_t loop;

    assert_int_equal(uv_loop_init(&loop), 0);
    sb_worker_init(&loop, 3);
    assert_int_equal(sb_worker_submit(NULL, job_after, &late), -1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(sb_worker_submit(job_work, job_after, &jobs[i]), 0);
    /* the three count until their after() ran, finished or not */
    assert_int_equal(sb_worker_submit(job_work, job_after, &jobs[3]), -1);
    assert_int_equal(sb_worker_inflight(), 3);
    run_loop(&loop);
    assert_int_equal(jobs[3].after_calls, 0);
    assert_int_equal(atomic_load(&jobs[3].work_ran), 0);
    assert_int_equal(sb_worker_inflight(), 0);
    /* room again */
    assert_int_equal(sb_worker_submit(job_work, job_after, &late), 0);
    run_loop(&loop);
    assert_int_equal(late.after_calls, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(jobs[i].after_calls, 1);

    /* a zero bound refuses everything */
    sb_worker_init(&loop, 0);
    assert_int_equal(sb_worker_submit(job_work, job_after, &late), -1);
    sb_worker_shutdown();
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_submit_from_after(void **state)
{
    static struct job j;
    int chain = 0;
    uv_loop_t loop;

    assert_int_equal(uv_loop_init(&loop), 0);
    sb_worker_init(&loop, 1);
    j.resubmit = 3;
    j.chain_done = &chain;
    /* with a bound of 1 the slot is free again inside after() */
    assert_int_equal(sb_worker_submit(job_work, job_after, &j), 0);
    run_loop(&loop);
    assert_int_equal(chain, 3);
    assert_int_equal(j.after_calls, 4);
    assert_int_equal(atomic_load(&j.work_ran), 4);
    sb_worker_shutdown();
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_shutdown_cancels_queued(void **state)
{
    enum { QUEUED = 6 };
    static struct job blockers[POOL_THREADS], queued[QUEUED], late;
    sem_t started, release;
    uv_loop_t loop;

    assert_int_equal(sem_init(&started, 0, 0), 0);
    assert_int_equal(sem_init(&release, 0, 0), 0);
    assert_int_equal(uv_loop_init(&loop), 0);
    sb_worker_init(&loop, POOL_THREADS + QUEUED);

    for (int i = 0; i < POOL_THREADS; i++) {
        blockers[i].started = &started;
        blockers[i].wait_on = &release;
        assert_int_equal(sb_worker_submit(job_work, job_after, &blockers[i]),
                         0);
    }
    /* every pool thread is now inside a blocker */
    for (int i = 0; i < POOL_THREADS; i++)
        assert_int_equal(sem_wait_s(&started, 10), 0);
    for (int i = 0; i < QUEUED; i++)
        assert_int_equal(sb_worker_submit(job_work, job_after, &queued[i]), 0);
    assert_int_equal(sb_worker_submit(job_work, job_after, &late), -1);
    assert_int_equal(sb_worker_inflight(), POOL_THREADS + QUEUED);

    sb_worker_shutdown();
    sb_worker_shutdown(); /* idempotent */
    assert_int_equal(sb_worker_submit(job_work, job_after, &late), -1);
    for (int i = 0; i < POOL_THREADS; i++)
        sem_post(&release);
    run_loop(&loop);

    for (int i = 0; i < POOL_THREADS; i++) {
        assert_int_equal(blockers[i].after_calls, 1);
        assert_int_equal(blockers[i].cancelled, 0);
        assert_int_equal(atomic_load(&blockers[i].work_ran), 1);
    }
    for (int i = 0; i < QUEUED; i++) {
        assert_int_equal(queued[i].after_calls, 1);
        assert_int_equal(queued[i].cancelled, 1);
        assert_int_equal(atomic_load(&queued[i].work_ran), 0);
    }
    assert_int_equal(late.after_calls, 0);
    assert_int_equal(sb_worker_inflight(), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    sem_destroy(&started);
    sem_destroy(&release);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_each_once),
        cmocka_unit_test(test_refuses_past_bound),
        cmocka_unit_test(test_submit_from_after),
        cmocka_unit_test(test_shutdown_cancels_queued),
    };

    /* the cancellation test must know the pool size: set it before the
     * pool starts */
    setenv("UV_THREADPOOL_SIZE", "4", 1);
    alarm(120);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
