/* testutil.h - small helpers the unit tests share (header-only).
 *
 * t_free_port(): a loopback TCP port nothing listens on (bound, then
 * released). t_stop_child(): SIGTERM a child server, wait up to 5 s, then
 * SIGKILL it, and reap it; a stopped (SIGSTOP) child is continued first.
 * t_slurp(): a whole file, NUL-terminated (new; NULL when it cannot be
 * opened); t_write_file(): len bytes to a new file, 0 or -1.
 */
#ifndef SB_TESTUTIL_H
#define SB_TESTUTIL_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <stdio.h>
#include <stdlib.h>

#include "util.h"

static inline int t_free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port = -1;

    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static inline void t_stop_child(pid_t pid)
{
    const struct timespec step = {0, 20 * 1000 * 1000};
    int st;

    if (pid <= 0)
        return;
    kill(pid, SIGCONT);
    kill(pid, SIGTERM);
    for (int i = 0; i < 250; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return;
        nanosleep(&step, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
}

static inline char *t_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct sb_buf b;
    char chunk[65536];
    size_t n;

    if (!f)
        return NULL;
    sb_buf_init(&b, 0);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        sb_buf_append(&b, chunk, n);
    fclose(f);
    return sb_buf_steal(&b, len); /* "" for an empty file */
}

static inline int t_write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    if (!f)
        return -1;
    if (fwrite(data, 1, len, f) != len) {
        fclose(f);
        return -1;
    }
    return fclose(f);
}

#endif
