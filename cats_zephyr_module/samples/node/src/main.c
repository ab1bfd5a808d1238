/*
 * CATS node sample: start the inference service and report every inference.
 *
 * The node waits for the gateway's input (over the simulation link on native_sim, or given
 * to cats_service_submit() by the application), runs its share of every exchange over the
 * radio and prints its output slice.
 */
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>

#include "cats/cats_service.h"

LOG_MODULE_REGISTER(cats_sample, LOG_LEVEL_INF);

static struct cats_service_result res;

int main(void)
{
	int rc = cats_service_start();

	if (rc != 0) {
		LOG_ERR("cats_service_start: %d", rc);
		return 0;
	}
	const struct cats_node *node = cats_service_node();

	LOG_INF("CATS node %u of %u ready, waiting for the gateway's input", cats_node_id(node),
		cats_node_count(node));
	for (;;) {
		if (cats_service_wait(&res, K_FOREVER) != 0) {
			continue;
		}
		LOG_INF("inference %u: status %d, outputs [%u, %u), %u ms, %u frames sent, "
			"%u received, %u columns lost",
			res.inference_id, res.status, res.start, res.start + res.count,
			res.elapsed_ms, res.stats.frames_sent, res.stats.frames_received,
			res.stats.columns_lost);
		LOG_HEXDUMP_DBG(res.values, res.count, "output slice");
	}
	return 0;
}
