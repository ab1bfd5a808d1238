/*
 * CATS gateway sample: the swarm's gateway (cats/cats_gateway_service.h) behind a bridge to
 * the robot (bridge.h). One loop: take a bridge message when the gateway can, feed the
 * nodes' OutputFrames to the gateway, end inferences at their deadline.
 */
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>

#include "bridge.h"
#include "cats/cats_gateway_service.h"

LOG_MODULE_REGISTER(cats_gateway_sample, LOG_LEVEL_INF);

int main(void)
{
	int rc = cats_gw_service_start(bridge_reply);

	if (rc == 0) {
		rc = bridge_open();
	}
	if (rc != 0) {
		LOG_ERR("gateway start failed: %d", rc);
		return 0;
	}
	for (;;) {
		int busy = cats_gw_service_busy();

		if (bridge_poll(busy) < 0 && !busy) {
			break;
		}
		cats_gw_service_run(busy ? 20 : 5);
	}
	LOG_INF("bridge closed, gateway idle");
	bridge_close();
	return 0;
}
