/*
 * Host port: clock_gettime(CLOCK_MONOTONIC) and stderr. POSIX, not part of the portable core.
 */
#define _POSIX_C_SOURCE 199309L

#include "port_host.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

uint32_t cats_port_host_now_ms(void *ctx)
{
	struct timespec ts;

	(void)ctx;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	/* Wraps after 49 days, like k_uptime_get_32(): callers compare differences. */
	return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

void cats_port_host_log(void *ctx, enum cats_log_level level, const char *msg)
{
	static const char *const names[] = {"err", "wrn", "inf", "dbg"};

	(void)ctx;
	fprintf(stderr, "cats %s: %s\n", (unsigned)level < 4u ? names[level] : "???", msg);
}

void cats_port_host_init(struct cats_port *port)
{
	memset(port, 0, sizeof(*port));
	port->now_ms = cats_port_host_now_ms;
	port->log = cats_port_host_log;
}
