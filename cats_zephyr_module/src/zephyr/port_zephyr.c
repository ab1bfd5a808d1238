/*
 * Port of the portable CATS core to Zephyr: the clock is k_uptime_get_32() (milliseconds
 * since boot, wraps after 49 days; the runner only takes differences), log lines go to the
 * `cats` log module (CONFIG_CATS_LOG_LEVEL), registered here: every glue file logs to it.
 */
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>

#include "cats_zephyr.h"

LOG_MODULE_REGISTER(cats, CONFIG_CATS_LOG_LEVEL);

BUILD_ASSERT(CONFIG_CATS_MIC_LEN == 4 || CONFIG_CATS_MIC_LEN == 8,
	     "CONFIG_CATS_MIC_LEN must be 4 or 8");

int cats_zephyr_key(uint8_t key[16])
{
	if (cats_auth_parse_key(CONFIG_CATS_SWARM_KEY, key) != 0) {
		LOG_ERR("no swarm key: CONFIG_CATS_SWARM_KEY must be 32 hex digits "
			"(west cats-build --key-file FILE)");
		return -EINVAL;
	}
	return 0;
}

static uint32_t port_now_ms(void *ctx)
{
	ARG_UNUSED(ctx);
	return k_uptime_get_32();
}

void cats_port_zephyr_log(void *ctx, enum cats_log_level level, const char *msg)
{
	ARG_UNUSED(ctx);
	switch (level) {
	case CATS_LOG_ERR:
		LOG_ERR("%s", msg);
		break;
	case CATS_LOG_WRN:
		LOG_WRN("%s", msg);
		break;
	case CATS_LOG_INF:
		LOG_INF("%s", msg);
		break;
	default:
		LOG_DBG("%s", msg);
		break;
	}
}

void cats_port_zephyr_init(struct cats_port *port, const struct cats_link *link)
{
	port->now_ms = port_now_ms;
	port->log = cats_port_zephyr_log;
	port->ctx = NULL;
	port->link = *link;
}
