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

/* One set of files per mount; the route's name picks the mount. */
struct static_mount {
    char name[32];
    struct static_file files[STATIC_MAX_FILES];
    size_t n;
};

static struct {
    struct static_mount mounts[8];
    size_t n;
} S;

static struct static_mount *mount_get(const char *name, int create)
{
    for (size_t i = 0; i < S.n; i++)
        if (strcmp(S.mounts[i].name, name) == 0)
            return &S.mounts[i];
    if (!create || S.n == SB_ARRAY_LEN(S.mounts))
        return NULL;
    snprintf(S.mounts[S.n].name, sizeof(S.mounts[S.n].name), "%s", name);
    return &S.mounts[S.n++];
}

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

int sb_static_mount(const char *mount, const char *dir)
{
    struct static_mount *m = mount_get(mount, 1);
    struct static_file nf[STATIC_MAX_FILES];
    size_t n = 0;
    DIR *d = opendir(dir);
    struct dirent *de;

    if (!m || !d) {
        SB_WARN("core.static", "cannot read pages mount=%s dir=%s", mount,
                dir);
        if (d)
            closedir(d);
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
    files_free(m->files, m->n);
    memcpy(m->files, nf, n * sizeof(nf[0]));
    m->n = n;
    SB_INFO("core.static", "pages loaded mount=%s dir=%s files=%zu", mount,
            dir, n);
    return 0;
}

int sb_static_load(const char *dir)
{
    return sb_static_mount("static", dir);
}

void sb_static_serve(struct sb_http_req *req)
{
    const char *name = req->params[0] ? req->params[0] : "index.html";
    struct static_mount *m =
        mount_get(req->route && req->route->name ? req->route->name
                                                 : "static",
                  0);

    for (size_t i = 0; m && i < m->n; i++) {
        const struct static_file *f = &m->files[i];
        if (strcmp(f->name, name) != 0)
            continue;
        sb_http_add_header(req, "Content-Security-Policy", csp);
        sb_http_add_header(req, "X-Frame-Options", "DENY");
        sb_http_add_header(req, "Referrer-Policy", "no-referrer");
        sb_http_respond(req, 200, f->ctype, f->data, f->len);
        return;
    }
    sb_http_respond_error(req, 404, "not found", NULL);
}

void sb_static_free(void)
{
    for (size_t i = 0; i < S.n; i++)
        files_free(S.mounts[i].files, S.mounts[i].n);
    S.n = 0;
}
