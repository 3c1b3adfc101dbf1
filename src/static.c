/* static.c - serve the browser pages from memory.
 *
 * The pages are a few small files with no build step; reading them once (and
 * again on SIGHUP) keeps file I/O off the loop. Every page goes out with a
 * Content-Security-Policy that allows only our own scripts, styles and
 * connections, so a customer's text that slipped into the DOM could still not
 * run script; the pages themselves only ever insert text with textContent.
 */
#include "static.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"

#define STATIC_MAX_FILES 64
#define STATIC_MAX_SIZE (1 << 20)

struct static_file {
    char *name;
    char *data;
    size_t len;
    const char *ctype;
};

static struct {
    struct static_file files[STATIC_MAX_FILES];
    size_t n;
} S;

static const char csp[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'";

static const char *ctype_of(const char *name)
{
    const char *dot = strrchr(name, '.');

    if (!dot)
        return "application/octet-stream";
    if (strcmp(dot, ".html") == 0)
        return "text/html; charset=utf-8";
    if (strcmp(dot, ".js") == 0)
        return "text/javascript; charset=utf-8";
    if (strcmp(dot, ".css") == 0)
        return "text/css; charset=utf-8";
    if (strcmp(dot, ".svg") == 0)
        return "image/svg+xml";
    if (strcmp(dot, ".png") == 0)
        return "image/png";
    return "application/octet-stream";
}

static int name_ok(const char *n)
{
    return n[0] != '.' &&
           strspn(n, "abcdefghijklmnopqrstuvwxyz"
                     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == strlen(n);
}

static void files_free(struct static_file *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(f[i].name);
        free(f[i].data);
    }
}

int sb_static_load(const char *dir)
{
    struct static_file nf[STATIC_MAX_FILES];
    size_t n = 0;
    DIR *d = opendir(dir);
    struct dirent *de;

    if (!d) {
        SB_WARN("core.static", "cannot read www_dir dir=%s", dir);
        return -1;
    }
    while ((de = readdir(d)) && n < STATIC_MAX_FILES) {
        char *path;
        FILE *f;
        struct stat st;

        if (!name_ok(de->d_name))
            continue;
        path = sb_asprintf("%s/%s", dir, de->d_name);
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) ||
            st.st_size > STATIC_MAX_SIZE || !(f = fopen(path, "rb"))) {
            free(path);
            continue;
        }
        nf[n].name = sb_strdup(de->d_name);
        nf[n].data = sb_malloc((size_t)st.st_size + 1);
        nf[n].len = fread(nf[n].data, 1, (size_t)st.st_size, f);
        nf[n].ctype = ctype_of(de->d_name);
        fclose(f);
        free(path);
        n++;
    }
    closedir(d);
    files_free(S.files, S.n);
    memcpy(S.files, nf, n * sizeof(nf[0]));
    S.n = n;
    SB_INFO("core.static", "pages loaded dir=%s files=%zu", dir, n);
    return 0;
}

void sb_static_serve(struct sb_http_req *req)
{
    const char *name = req->params[0] ? req->params[0] : "index.html";

    for (size_t i = 0; i < S.n; i++) {
        if (strcmp(S.files[i].name, name) != 0)
            continue;
        sb_http_add_header(req, "Content-Security-Policy", csp);
        sb_http_add_header(req, "X-Frame-Options", "DENY");
        sb_http_add_header(req, "Referrer-Policy", "no-referrer");
        sb_http_respond(req, 200, S.files[i].ctype, S.files[i].data,
                        S.files[i].len);
        return;
    }
    sb_http_respond_error(req, 404, "not found", NULL);
}

void sb_static_free(void)
{
    files_free(S.files, S.n);
    S.n = 0;
}
