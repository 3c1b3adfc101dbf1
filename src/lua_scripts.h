/* lua_scripts.h - the Redis Lua scripts in src/lua/, embedded at build time.
 *
 * scripts/embed-lua.sh generates the table from src/lua/NAME.lua; look a
 * script up by NAME (file name without .lua). */
#ifndef SB_LUA_SCRIPTS_H
#define SB_LUA_SCRIPTS_H

#include <stddef.h>

struct sb_lua_script {
    const char *name;
    const char *src;
};

/* Terminated by a {NULL, NULL} row. */
extern const struct sb_lua_script sb_lua_scripts[];

#endif
