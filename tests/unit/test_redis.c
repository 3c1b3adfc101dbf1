/* test_redis.c - unit tests of src/redis.c against a real redis-server.
 *
 * Each case starts its own redis-server on a unix socket in a fresh temp
 * directory (no TCP port: --port 0), runs a private uv loop, and kills the
 * server by PID in the teardown, which cmocka runs on failure too. The loop
 * only ever runs through run_until(), bounded in time. Callbacks record what
 * they saw in the heap fixture; the test body asserts on it (an assertion
 * inside a loop callback would longjmp out of uv_run).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "config.h"
#include "redis.h"
#include "util.h"

#define NCMD 10000
#define MAX_SEEN 20000

struct server {
    pid_t pid;
    char dir[64];
    char sock[128];
};

struct fx {
    uv_loop_t loop;
    uv_timer_t tick; /* wakes UV_RUN_ONCE so run_until can look */
    struct server srv;
    struct sb_redis *r;
    struct sb_redis_conf conf;

    int ups, downs, last_up;
    int close_in_state; /* state callback closes r on up == 0 */

    /* per-callback records */
    int fired;          /* callbacks seen */
    int nulls;          /* of which reply == NULL */
    int bad;            /* anything unexpected (order, twice, ...) */
    int seen[MAX_SEEN]; /* per index: how many times fired */
    char err[64][64];   /* err of the first 64 commands */
    char str[64][64];   /* string reply of the first 64 commands */
    int order[64];      /* indexes in the order they fired */
    long long next_int; /* pipeline: the INCR value expected next */
    uint64_t fired_at;  /* sb_mono_ms of the last callback */
    char last_str[4096];
    int last_type;
    int close_from_cb; /* the callback of index 0 closes r */
};

/* ---- redis-server ------------------------------------------------------ */

static int server_start(struct server *s, const char *extra1,
                        const char *extra2)
{
    char log[128];
    pid_t pid;

    snprintf(log, sizeof(log), "%s/redis.log", s->dir);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        /* The server dies with the test, even when the test crashes. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (extra1)
            execlp("redis-server", "redis-server", "--port", "0",
                   "--unixsocket", s->sock, "--unixsocketperm", "700", "--save",
                   "", "--appendonly", "no", "--daemonize", "no", "--dir",
                   s->dir, extra1, extra2, (char *)NULL);
        else
            execlp("redis-server", "redis-server", "--port", "0",
                   "--unixsocket", s->sock, "--unixsocketperm", "700", "--save",
                   "", "--appendonly", "no", "--daemonize", "no", "--dir",
                   s->dir, (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    return 0;
}

/* Until the socket answers PING (any answer, even NOAUTH), max 5 s. */
static int server_wait(struct server *s)
{
    uint64_t end = sb_mono_ms() + 5000;
    struct timeval tv = {0, 200000};

    while (sb_mono_ms() < end) {
        redisContext *c = redisConnectUnixWithTimeout(s->sock, tv);
        if (c && !c->err) {
            redisReply *rep = redisCommand(c, "PING");
            int ok = rep != NULL;
            if (rep)
                freeReplyObject(rep);
            redisFree(c);
            if (ok)
                return 0;
        } else if (c) {
            redisFree(c);
        }
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
            s->pid = 0;
            return -1;
        }
        usleep(20000);
    }
    return -1;
}

static void server_kill(struct server *s)
{
    if (s->pid > 0) {
        /* SIGKILL ends a stopped process too; a SIGCONT first would let it
         * answer queued commands in between (a flaky test_killed). */
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

static void rm_dir(const char *dir)
{
    static const char *const names[] = {"redis.sock", "redis.log", "dump.rdb",
                                        "none.sock"};
    char p[192];

    for (size_t i = 0; i < SB_ARRAY_LEN(names); i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

/* ---- loop helpers ------------------------------------------------------ */

static void on_tick(uv_timer_t *t)
{
    SB_UNUSED(t);
}

/* Run the loop until cond holds or ms pass. Returns cond's final value. */
static int run_until(struct fx *f, int (*cond)(struct fx *), uint64_t ms)
{
    uint64_t end = sb_mono_ms() + ms;
    int ok;

    uv_timer_start(&f->tick, on_tick, 5, 5);
    while (!(ok = cond(f)) && sb_mono_ms() < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->tick);
    return ok;
}

static int never(struct fx *f)
{
    SB_UNUSED(f);
    return 0;
}

static void run_for(struct fx *f, uint64_t ms)
{
    run_until(f, never, ms);
}

static int is_up(struct fx *f)
{
    return f->r && sb_redis_is_up(f->r);
}

static int is_down(struct fx *f)
{
    return f->downs > 0;
}

static int target;
static int fired_enough(struct fx *f)
{
    return f->fired >= target;
}

static void on_state(struct sb_redis *r, int up, void *arg)
{
    struct fx *f = arg;

    if (up)
        f->ups++;
    else
        f->downs++;
    f->last_up = up;
    if (!up && f->close_in_state && f->r == r) {
        sb_redis_close(r);
        f->r = NULL;
    }
}

/* Index-carrying callbacks: the arg points into this table. */
struct call {
    struct fx *f;
    int idx;
};
static struct call calls[MAX_SEEN];

static void on_call(redisReply *reply, const char *err, void *arg)
{
    struct call *c = arg;
    struct fx *f = c->f;

    f->fired++;
    f->fired_at = sb_mono_ms();
    if (c->idx < 0 || c->idx >= MAX_SEEN || ++f->seen[c->idx] != 1)
        f->bad++;
    if (!reply) {
        f->nulls++;
        if (!err)
            f->bad++;
    } else {
        f->last_type = reply->type;
        if (reply->type == REDIS_REPLY_ERROR && (!err || err != reply->str))
            f->bad++;
        if (reply->type != REDIS_REPLY_ERROR && err)
            f->bad++;
        if (reply->type == REDIS_REPLY_STRING ||
            reply->type == REDIS_REPLY_STATUS ||
            reply->type == REDIS_REPLY_ERROR)
            snprintf(f->last_str, sizeof(f->last_str), "%s", reply->str);
        if (reply->type == REDIS_REPLY_INTEGER) {
            if (reply->integer != f->next_int)
                f->bad++;
            f->next_int++;
        }
    }
    if (c->idx >= 0 && c->idx < 64) {
        snprintf(f->err[c->idx], sizeof(f->err[0]), "%s", err ? err : "");
        snprintf(f->str[c->idx], sizeof(f->str[0]), "%s",
                 reply && reply->str ? reply->str : "");
    }
    if (f->fired <= 64)
        f->order[f->fired - 1] = c->idx;
    if (c->idx == 0 && f->close_from_cb && f->r) {
        sb_redis_close(f->r);
        f->r = NULL;
    }
}

static struct call *call_arg(struct fx *f, int idx)
{
    calls[idx].f = f;
    calls[idx].idx = idx;
    return &calls[idx];
}

static int cmd(struct fx *f, int idx, int argc, const char **argv)
{
    return sb_redis_cmdv(f->r, on_call, call_arg(f, idx), argc, argv, NULL);
}

static int cmd1(struct fx *f, int idx, const char *a)
{
    const char *argv[] = {a};
    return cmd(f, idx, 1, argv);
}

/* ---- fixture ----------------------------------------------------------- */

static void conf_defaults(struct fx *f)
{
    memset(&f->conf, 0, sizeof(f->conf));
    f->conf.socket = f->srv.sock;
    f->conf.connect_timeout = 1000;
    f->conf.command_timeout = 2000;
    f->conf.backoff_min = 50;
    f->conf.backoff_max = 400;
    f->conf.max_pending = 100000;
}

static void open_redis(struct fx *f)
{
    f->r = sb_redis_new(&f->loop, &f->conf, "test");
    sb_redis_on_state(f->r, on_state, f);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    if (!f)
        return -1;
    snprintf(f->srv.dir, sizeof(f->srv.dir), "/tmp/sb-redis-XXXXXX");
    if (!mkdtemp(f->srv.dir)) {
        free(f);
        return -1;
    }
    snprintf(f->srv.sock, sizeof(f->srv.sock), "%s/redis.sock", f->srv.dir);
    uv_loop_init(&f->loop);
    uv_timer_init(&f->loop, &f->tick);
    conf_defaults(f);
    *state = f;
    return 0;
}

/* Start the server and connect; used by most cases. */
static void start_all(struct fx *f)
{
    assert_int_equal(server_start(&f->srv, NULL, NULL), 0);
    assert_int_equal(server_wait(&f->srv), 0);
    open_redis(f);
    assert_true(run_until(f, is_up, 3000));
    assert_int_equal(f->ups, 1);
}

static int loop_idle(struct fx *f)
{
    return !uv_loop_alive(&f->loop);
}

static int teardown(void **state)
{
    struct fx *f = *state;
    int rc = 0;

    if (f->r)
        sb_redis_close(f->r);
    f->r = NULL;
    uv_close((uv_handle_t *)&f->tick, NULL);
    /* Not run_until: the tick is gone; the loop ends when idle. */
    for (int i = 0; i < 100 && uv_loop_alive(&f->loop); i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    if (!loop_idle(f) || uv_loop_close(&f->loop) != 0) {
        fprintf(stderr, "teardown: handles left on the loop\n");
        rc = -1;
    }
    server_kill(&f->srv);
    rm_dir(f->srv.dir);
    free(f);
    return rc;
}

/* ---- cases ------------------------------------------------------------- */

static void test_conf_table(void **state)
{
    static const struct sb_conf_section *const secs[] = {&sb_redis_conf_section,
                                                         NULL};
    const char *ok = "[redis]\nsocket = /run/redis.sock\npassword = x\n"
                     "command_timeout = 300ms\n";
    const char *bad_port = "[redis]\nport = 70000\n";
    const char *bad_db = "[redis]\ndb = 16\n";
    const char *bad_backoff = "[redis]\nbackoff_min = 10s\nbackoff_max = 1s\n";
    const struct sb_redis_conf *c;
    struct sb_config *cfg;
    char err[256];

    SB_UNUSED(state);
    cfg = sb_config_parse(ok, strlen(ok), "t.conf", secs, err, sizeof(err));
    assert_non_null(cfg);
    c = sb_config_get(cfg, "redis");
    assert_non_null(c);
    assert_string_equal(c->host, "127.0.0.1");
    assert_int_equal(c->port, 6379);
    assert_string_equal(c->socket, "/run/redis.sock");
    assert_string_equal(c->prefix, "sb:");
    assert_int_equal(c->db, 0);
    assert_int_equal(c->connect_timeout, 2000);
    assert_int_equal(c->command_timeout, 300);
    assert_int_equal(c->backoff_min, 100);
    assert_int_equal(c->backoff_max, 5000);
    assert_int_equal(c->max_pending, 100000);
    sb_config_free(cfg);

    assert_null(sb_config_parse(bad_port, strlen(bad_port), "t.conf", secs, err,
                                sizeof(err)));
    assert_null(sb_config_parse(bad_db, strlen(bad_db), "t.conf", secs, err,
                                sizeof(err)));
    assert_null(sb_config_parse(bad_backoff, strlen(bad_backoff), "t.conf",
                                secs, err, sizeof(err)));
    for (const struct sb_conf_key *k = sb_redis_conf_section.keys; k->name;
         k++) {
        assert_non_null(k->doc);
        if (strcmp(k->name, "password") == 0)
            assert_true(k->flags & SB_CONF_SECRET);
    }
}

static void test_connect_ping(void **state)
{
    struct fx *f = *state;

    start_all(f);
    assert_int_equal(cmd1(f, 0, "PING"), 0);
    assert_int_equal(sb_redis_pending(f->r), 1);
    target = 1;
    assert_true(run_until(f, fired_enough, 2000));
    assert_int_equal(f->bad, 0);
    assert_int_equal(f->last_type, REDIS_REPLY_STATUS);
    assert_string_equal(f->last_str, "PONG");
    assert_int_equal(sb_redis_pending(f->r), 0);

    /* the printf form, with a binary-safe argument */
    assert_int_equal(sb_redis_cmdf(f->r, on_call, call_arg(f, 1), "ECHO %b",
                                   "a\0b", (size_t)3),
                     0);
    target = 2;
    assert_true(run_until(f, fired_enough, 2000));
    assert_int_equal(f->last_type, REDIS_REPLY_STRING);
    assert_int_equal(f->bad, 0);

    /* pub/sub would call back many times: refused */
    assert_int_equal(cmd1(f, 2, "SUBSCRIBE"), -1);
    run_for(f, 50);
    assert_int_equal(f->fired, 2);
    assert_int_equal(f->downs, 0);
}

static void test_pipeline(void **state)
{
    struct fx *f = *state;
    const char *argv[] = {"INCR", "sb:test:counter"};

    start_all(f);
    f->next_int = 1;
    for (int i = 0; i < NCMD; i++)
        assert_int_equal(cmd(f, i, 2, argv), 0);
    assert_int_equal(sb_redis_pending(f->r), NCMD);
    target = NCMD;
    assert_true(run_until(f, fired_enough, 10000));
    run_for(f, 50); /* nothing more may come */
    assert_int_equal(f->fired, NCMD);
    assert_int_equal(f->bad, 0);
    assert_int_equal(f->nulls, 0);
    assert_int_equal(f->next_int, NCMD + 1);
    for (int i = 0; i < NCMD; i++)
        assert_int_equal(f->seen[i], 1);
    assert_int_equal(sb_redis_pending(f->r), 0);
}

static void test_error_reply(void **state)
{
    struct fx *f = *state;
    const char *set[] = {"SET", "sb:test:s", "abc"};
    const char *incr[] = {"INCR", "sb:test:s"};

    start_all(f);
    assert_int_equal(cmd1(f, 0, "NOSUCHCOMMAND"), 0);
    target = 1;
    assert_true(run_until(f, fired_enough, 2000));
    assert_int_equal(f->last_type, REDIS_REPLY_ERROR);
    assert_int_equal(strncmp(f->err[0], "ERR", 3), 0);
    assert_int_equal(f->bad, 0); /* err == reply->str, checked in on_call */

    assert_int_equal(cmd(f, 1, 3, set), 0);
    assert_int_equal(cmd(f, 2, 2, incr), 0);
    target = 3;
    assert_true(run_until(f, fired_enough, 2000));
    assert_int_equal(f->last_type, REDIS_REPLY_ERROR);
    assert_string_equal(f->err[1], "");
    assert_non_null(strstr(f->err[2], "not an integer"));
    assert_int_equal(f->bad, 0);
    assert_true(sb_redis_is_up(f->r)); /* an error reply is not a failure */
}

static void test_refused_when_down(void **state)
{
    struct fx *f = *state;
    char none[128];

    snprintf(none, sizeof(none), "%s/none.sock", f->srv.dir);
    f->conf.socket = none;
    open_redis(f);
    assert_false(sb_redis_is_up(f->r));
    assert_int_equal(cmd1(f, 0, "PING"), -1);
    assert_int_equal(sb_redis_script(f->r, "ping", on_call, call_arg(f, 1), 0,
                                     0, NULL, NULL),
                     -1);
    run_for(f, 300); /* several failed attempts, with backoff */
    assert_int_equal(cmd1(f, 2, "PING"), -1);
    run_for(f, 50);
    assert_int_equal(f->fired, 0);
    assert_int_equal(f->ups, 0);
    assert_int_equal(f->downs, 0); /* never up: no transition */
    assert_int_equal(sb_redis_pending(f->r), 0);

    /* the server appears later at that path: connects by itself */
    snprintf(f->srv.sock, sizeof(f->srv.sock), "%s", none);
    assert_int_equal(server_start(&f->srv, NULL, NULL), 0);
    assert_true(run_until(f, is_up, 3000));
    assert_int_equal(f->ups, 1);
}


/* Redis stalls: once the oldest command has waited half the command
 * timeout, new commands are refused (load shed) instead of joining a queue
 * that will time out as a whole; when Redis answers again they flow. */
static void test_overload_shed(void **state)
{
    struct fx *f = *state;

    f->conf.command_timeout = 1000;
    start_all(f);
    assert_int_equal(kill(f->srv.pid, SIGSTOP), 0);
    assert_int_equal(cmd1(f, 0, "PING"), 0);
    run_for(f, 200);
    assert_int_equal(cmd1(f, 1, "PING"), 0); /* waited 200 of 1000 ms */
    run_for(f, 450);
    assert_int_equal(cmd1(f, 2, "PING"), -1); /* waited 650: shed */
    assert_int_equal(kill(f->srv.pid, SIGCONT), 0);
    target = 2;
    assert_true(run_until(f, fired_enough, 2000));
    assert_int_equal(f->nulls, 0);
    assert_int_equal(cmd1(f, 3, "PING"), 0);
}

static void test_timeout_and_recover(void **state)
{
    struct fx *f = *state;
    const char *get[] = {"GET", "sb:test:x"};
    uint64_t t0;

    f->conf.command_timeout = 300;
    f->conf.connect_timeout = 300;
    start_all(f);
    assert_int_equal(kill(f->srv.pid, SIGSTOP), 0);
    t0 = sb_mono_ms();
    assert_int_equal(cmd(f, 0, 2, get), 0);
    assert_int_equal(cmd(f, 1, 2, get), 0);
    target = 2;
    assert_true(run_until(f, fired_enough, 2000));
    assert_int_equal(f->bad, 0);
    assert_int_equal(f->nulls, 2);
    assert_string_equal(f->err[0], "timeout");
    assert_string_equal(f->err[1], "disconnected");
    assert_true(f->fired_at - t0 >= 250);
    assert_true(f->fired_at - t0 <= 300 + 200);
    assert_int_equal(f->downs, 1);
    assert_false(sb_redis_is_up(f->r));
    assert_int_equal(cmd1(f, 2, "PING"), -1);

    run_for(f, 700); /* attempts time out in the handshake meanwhile */
    assert_int_equal(f->ups, 1);
    assert_int_equal(kill(f->srv.pid, SIGCONT), 0);
    assert_true(run_until(f, is_up, 3000));
    assert_int_equal(f->ups, 2);
    assert_int_equal(cmd1(f, 3, "PING"), 0);
    target = 3;
    assert_true(run_until(f, fired_enough, 2000));
    assert_string_equal(f->last_str, "PONG");
    assert_int_equal(f->bad, 0);
}

static void test_killed(void **state)
{
    struct fx *f = *state;
    struct sb_redis_conf longer;

    f->conf.command_timeout = 300;
    start_all(f);
    /* a reload makes the timeout long enough not to interfere */
    longer = f->conf;
    longer.command_timeout = 10000;
    sb_redis_reconfigure(f->r, &longer);

    assert_int_equal(kill(f->srv.pid, SIGSTOP), 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(cmd1(f, i, "PING"), 0);
    run_for(f, 400); /* longer than the old timeout: nothing fires */
    assert_int_equal(f->fired, 0);
    server_kill(&f->srv);
    target = 100;
    assert_true(run_until(f, fired_enough, 2000));
    run_for(f, 50);
    assert_int_equal(f->fired, 100);
    assert_int_equal(f->nulls, 100);
    assert_int_equal(f->bad, 0);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(f->seen[i], 1);
        if (i < 64)
            assert_string_equal(f->err[i], "disconnected");
    }
    assert_int_equal(f->downs, 1);
    assert_int_equal(f->last_up, 0);
    assert_int_equal(sb_redis_pending(f->r), 0);
}

static void test_restart(void **state)
{
    struct fx *f = *state;
    uint64_t t0;

    start_all(f);
    server_kill(&f->srv);
    assert_true(run_until(f, is_down, 2000));
    run_for(f, 300); /* a few failed attempts */
    assert_int_equal(server_start(&f->srv, NULL, NULL), 0);
    assert_int_equal(server_wait(&f->srv), 0);
    t0 = sb_mono_ms();
    /* backoff_max is 400 ms: the next attempt comes within that */
    assert_true(run_until(f, is_up, 400 + 500));
    assert_true(sb_mono_ms() - t0 <= 900);
    assert_int_equal(f->ups, 2);
    assert_int_equal(cmd1(f, 0, "PING"), 0);
    target = 1;
    assert_true(run_until(f, fired_enough, 2000));
    assert_string_equal(f->last_str, "PONG");
}

static void test_close_from_state_cb(void **state)
{
    struct fx *f = *state;

    start_all(f);
    f->close_in_state = 1;
    assert_int_equal(kill(f->srv.pid, SIGSTOP), 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(cmd1(f, i, "PING"), 0);
    server_kill(&f->srv);
    target = 10;
    assert_true(run_until(f, fired_enough, 2000));
    assert_null(f->r); /* closed by on_state */
    assert_int_equal(f->nulls, 10);
    assert_int_equal(f->bad, 0);
    assert_int_equal(f->downs, 1);
}

static void test_script(void **state)
{
    struct fx *f = *state;
    const char *flush[] = {"SCRIPT", "FLUSH"};
    const char *reset[] = {"CONFIG", "RESETSTAT"};
    const char *info[] = {"INFO", "commandstats"};
    const char *args[] = {"sb:test:key", "hello"};
    const char *eval[] = {"EVAL", "return ARGV[1]", "0", "direct"};

    start_all(f);
    /* EVAL through cmdv works as any command */
    assert_int_equal(cmd(f, 0, 4, eval), 0);
    target = 1;
    assert_true(run_until(f, fired_enough, 2000));
    assert_string_equal(f->last_str, "direct");

    /* the script was loaded on connect: EVALSHA answers */
    assert_int_equal(sb_redis_script(f->r, "ping", on_call, call_arg(f, 1), 0,
                                     0, NULL, NULL),
                     0);
    target = 2;
    assert_true(run_until(f, fired_enough, 2000));
    assert_string_equal(f->last_str, "PONG");

    /* forget it on the server: EVALSHA gets NOSCRIPT, EVAL answers */
    assert_int_equal(cmd(f, 2, 2, flush), 0);
    assert_int_equal(cmd(f, 3, 2, reset), 0);
    assert_int_equal(sb_redis_script(f->r, "ping", on_call, call_arg(f, 4), 1,
                                     2, args, NULL),
                     0);
    assert_int_equal(cmd1(f, 5, "PING"), 0); /* queued behind the script */
    target = 6;
    assert_true(run_until(f, fired_enough, 2000));
    run_for(f, 50);
    assert_int_equal(f->fired, 6);
    assert_int_equal(f->bad, 0);
    assert_string_equal(f->err[4], "");
    assert_string_equal(f->str[4], "hello"); /* KEYS then ARGV survived */
    assert_string_equal(f->str[5], "PONG");
    assert_int_equal(f->seen[4], 1);
    /* the re-sent EVAL queues behind what was sent after the script */
    assert_int_equal(f->order[4], 5);
    assert_int_equal(f->order[5], 4);
    assert_int_equal(sb_redis_pending(f->r), 0);

    /* the fallback happened: one EVALSHA (failed) and one EVAL */
    assert_int_equal(cmd(f, 6, 2, info), 0);
    target = 7;
    assert_true(run_until(f, fired_enough, 2000));
    assert_non_null(strstr(f->last_str, "cmdstat_evalsha:calls=1,"));
    assert_non_null(strstr(f->last_str, "cmdstat_eval:calls=1,"));
    assert_non_null(strstr(f->last_str, "failed_calls=1"));

    /* EVAL cached the script again: EVALSHA alone answers now */
    assert_int_equal(cmd(f, 7, 2, reset), 0);
    assert_int_equal(sb_redis_script(f->r, "ping", on_call, call_arg(f, 8), 1,
                                     2, args, NULL),
                     0);
    assert_int_equal(cmd(f, 9, 2, info), 0);
    target = 10;
    assert_true(run_until(f, fired_enough, 2000));
    assert_string_equal(f->str[8], "hello");
    assert_non_null(strstr(f->last_str, "cmdstat_evalsha:calls=1,"));
    assert_null(strstr(f->last_str, "cmdstat_eval:"));
    assert_int_equal(f->bad, 0);

    /* bad calls are refused without a callback */
    assert_int_equal(sb_redis_script(f->r, "no-such-script", on_call,
                                     call_arg(f, 10), 0, 0, NULL, NULL),
                     -1);
    assert_int_equal(sb_redis_script(f->r, "ping", on_call, call_arg(f, 11), 3,
                                     2, args, NULL),
                     -1);
    run_for(f, 50);
    assert_int_equal(f->fired, 10);
}

static void test_close_in_callback(void **state)
{
    struct fx *f = *state;

    start_all(f);
    f->close_from_cb = 1;
    for (int i = 0; i < 5; i++)
        assert_int_equal(cmd1(f, i, "PING"), 0);
    target = 5;
    assert_true(run_until(f, fired_enough, 2000));
    assert_null(f->r);
    assert_int_equal(f->fired, 5);
    assert_int_equal(f->bad, 0);
    assert_string_equal(f->err[0], "");
    for (int i = 1; i < 5; i++)
        assert_string_equal(f->err[i], "closing");
    assert_int_equal(f->nulls, 4);
    assert_int_equal(f->downs, 0); /* closing is not a lost link */
}

static void test_close_pending(void **state)
{
    struct fx *f = *state;

    start_all(f);
    for (int i = 0; i < 10; i++)
        assert_int_equal(cmd1(f, i, "PING"), 0);
    sb_redis_close(f->r);
    f->r = NULL;
    assert_int_equal(f->fired, 10); /* at once, inside the close */
    assert_int_equal(f->nulls, 10);
    for (int i = 0; i < 10; i++)
        assert_string_equal(f->err[i], "closing");
    run_for(f, 50);
    assert_int_equal(f->fired, 10);
    assert_int_equal(f->bad, 0);
}

static void test_max_pending(void **state)
{
    struct fx *f = *state;

    f->conf.max_pending = 5;
    start_all(f);
    for (int i = 0; i < 5; i++)
        assert_int_equal(cmd1(f, i, "PING"), 0);
    assert_int_equal(cmd1(f, 5, "PING"), -1);
    assert_int_equal(sb_redis_pending(f->r), 5);
    target = 5;
    assert_true(run_until(f, fired_enough, 2000));
    run_for(f, 50);
    assert_int_equal(f->fired, 5);
    assert_int_equal(f->seen[5], 0);
    assert_int_equal(cmd1(f, 6, "PING"), 0); /* room again */
    target = 6;
    assert_true(run_until(f, fired_enough, 2000));
    assert_int_equal(f->bad, 0);
}

static void test_auth_select(void **state)
{
    struct fx *f = *state;
    const char *client[] = {"CLIENT", "INFO"};

    assert_int_equal(server_start(&f->srv, "--requirepass", "s3cret"), 0);
    assert_int_equal(server_wait(&f->srv), 0);

    /* wrong password: never up */
    f->conf.password = "wrong";
    open_redis(f);
    run_for(f, 300);
    assert_int_equal(f->ups, 0);
    sb_redis_close(f->r);
    f->r = NULL;

    f->conf.password = "s3cret";
    f->conf.db = 3;
    open_redis(f);
    assert_true(run_until(f, is_up, 3000));
    assert_int_equal(cmd(f, 0, 2, client), 0);
    target = 1;
    assert_true(run_until(f, fired_enough, 2000));
    assert_non_null(strstr(f->last_str, " db=3 "));
    assert_int_equal(f->bad, 0);
}


/* ---- subscriber -------------------------------------------------------- */

static int sub_got;
static char sub_last[64];

static void on_sub_msg(const char *channel, const char *payload, size_t len,
                       void *arg)
{
    (void)arg;
    if (strcmp(channel, "ev") != 0)
        return;
    sub_got++;
    snprintf(sub_last, sizeof(sub_last), "%.*s", (int)len, payload);
}

static int sub_has_one(struct fx *f)
{
    (void)f;
    return sub_got >= 1;
}

static struct sb_redis *sub_r;

static int sub_up(struct fx *f)
{
    (void)f;
    return sb_redis_is_up(sub_r);
}

static void publish(struct fx *f, int idx, const char *payload)
{
    const char *argv[] = {"PUBLISH", "ev", payload};
    assert_int_equal(cmd(f, idx, 3, argv), 0);
}

/* Messages arrive once each; after Redis restarts the subscriber is back
 * on its channels without help; commands are refused on it. */
static void test_subscriber(void **state)
{
    struct fx *f = *state;
    const char *chans[] = {"ev", NULL};
    const char *ping[] = {"PING"};

    start_all(f);
    sub_got = 0;
    sub_r = sb_redis_subscriber(&f->loop, &f->conf, "sub", chans, on_sub_msg,
                                NULL);
    assert_true(run_until(f, sub_up, 3000));
    assert_int_equal(sb_redis_cmdv(sub_r, NULL, NULL, 1, ping, NULL), -1);
    run_for(f, 50); /* SUBSCRIBE answered */
    publish(f, 0, "one");
    assert_true(run_until(f, sub_has_one, 2000));
    assert_string_equal(sub_last, "one");
    run_for(f, 100);
    assert_int_equal(sub_got, 1);

    server_kill(&f->srv);
    assert_true(run_until(f, is_down, 2000));
    assert_int_equal(server_start(&f->srv, NULL, NULL), 0);
    assert_int_equal(server_wait(&f->srv), 0);
    assert_true(run_until(f, is_up, 3000));
    assert_true(run_until(f, sub_up, 3000));
    run_for(f, 100);
    sub_got = 0;
    publish(f, 1, "two");
    assert_true(run_until(f, sub_has_one, 2000));
    assert_string_equal(sub_last, "two");
    sb_redis_close(sub_r);
    sub_r = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conf_table),
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_subscriber),
        T(test_overload_shed),
        T(test_connect_ping),
        T(test_pipeline),
        T(test_error_reply),
        T(test_refused_when_down),
        T(test_timeout_and_recover),
        T(test_killed),
        T(test_restart),
        T(test_close_from_state_cb),
        T(test_script),
        T(test_close_in_callback),
        T(test_close_pending),
        T(test_max_pending),
        T(test_auth_select),
#undef T
    };

    signal(SIGPIPE, SIG_IGN);
    if (getenv("TEST_FILTER"))
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
