/* redis_server.h - a private redis-server for unit tests that need one.
 *
 * Header-only (static functions) so each test binary stays one file:
 * t_server_start() makes a temp dir, starts redis-server on a unix socket
 * there (no persistence) and waits until it answers PING; t_server_stop()
 * stops it by PID (TERM, then KILL after 5 s) and removes the dir.
 */
#ifndef SB_TEST_REDIS_SERVER_H
#define SB_TEST_REDIS_SERVER_H

#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

struct t_server {
    pid_t pid;
    char dir[64];
    char sock[128];
};

static void t_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static redisContext *t_sync_connect(const char *sock)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectUnixWithTimeout(sock, tv);

    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    if (c)
        redisSetTimeout(c, tv);
    return c;
}

/* name tells the temp dirs of different test binaries apart. */
static int t_server_start_named(struct t_server *s, const char *name)
{
    int i;

    memset(s, 0, sizeof(*s));
    snprintf(s->dir, sizeof(s->dir), "/tmp/sb-test-%s-XXXXXX", name);
    if (!mkdtemp(s->dir))
        return -1;
    snprintf(s->sock, sizeof(s->sock), "%s/redis.sock", s->dir);
    s->pid = fork();
    if (s->pid < 0)
        return -1;
    if (s->pid == 0) {
        /* The server dies with the test, even when the test crashes. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (!freopen("/dev/null", "w", stdout) ||
            !freopen("/dev/null", "w", stderr))
            _exit(127);
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket",
               s->sock, "--save", "", "--appendonly", "no", "--dir", s->dir,
               (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 100; i++) {
        redisContext *c = t_sync_connect(s->sock);

        if (c) {
            redisReply *r = redisCommand(c, "PING");
            int ok = r && r->type == REDIS_REPLY_STATUS;

            freeReplyObject(r);
            redisFree(c);
            if (ok)
                return 0;
        }
        t_sleep_ms(50);
    }
    return -1;
}

static void t_server_stop(struct t_server *s)
{
    t_stop_child(s->pid);
    s->pid = 0;
    if (s->dir[0]) {
        char path[192];

        unlink(s->sock);
        snprintf(path, sizeof(path), "%s/dump.rdb", s->dir);
        unlink(path);
        rmdir(s->dir);
        s->dir[0] = '\0';
    }
}

#endif
