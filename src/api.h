/* api.h - the REST API routes (/api/v1) and health/metrics endpoints. */
#ifndef SB_API_H
#define SB_API_H

#include "config.h"
#include "core.h"
#include "http.h"
#include "redis.h"

/* The route table for sb_http_start (static; lives for the process). */
const struct sb_route *sb_api_routes(void);

/* ready() answers /readyz: 1 when Redis is up and we are not draining. */
void sb_api_init(struct sb_redis *r, int (*ready)(void));
/* Current config (borrowed; call again after each reload). */
void sb_api_config(const struct sb_config *conf);

#endif
