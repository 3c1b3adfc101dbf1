/* static.h - the browser pages (src/www/), read into memory at start and on
 * SIGHUP, served with a strict Content-Security-Policy. */
#ifndef SB_STATIC_H
#define SB_STATIC_H

#include "http.h"

/* (Re)load every regular file of dir (names of [A-Za-z0-9._-], at most 64
 * files of 1 MiB each). 0, or -1 when dir cannot be read (the previous set is
 * kept). */
int sb_static_load(const char *dir);

/* The same for another set of pages: routes whose name is `mount` serve
 * the files of dir ("/chat/" and "/chat/{}" with name "chat"). */
int sb_static_mount(const char *mount, const char *dir);

/* Handler: the route's name picks the mount ("static" by default); the
 * {} parameter names the file, none means index.html. */
void sb_static_serve(struct sb_http_req *req);

void sb_static_free(void);

#endif
