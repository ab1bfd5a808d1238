/*
 * The CATS inference service on Zephyr (CONFIG_CATS_SERVICE): one thread that runs this
 * node's share of every inference over the configured radio link, with the partition linked
 * into the image (-DCATS_PARTITION_DIR, -DCATS_NODE_ID) and the node's memory plan in a
 * static arena of CONFIG_CATS_ARENA_SIZE bytes.
 *
 *   cats_service_start()   decode + verify the partition, bring the link up, start the thread
 *   cats_service_submit()  hand it an inference (the gateway's broadcast input)
 *   cats_service_wait()    block until an inference finished (or register a callback)
 *
 * Inputs reach the service through cats_service_submit(): from the simulation link (the
 * medium forwards the gateway's input, src/zephyr/link_sim.c) or from the application
 * (a gateway node's host link, a shell command, a test).
 */
#ifndef CATS_SERVICE_H_
#define CATS_SERVICE_H_

#include <stddef.h>
#include <stdint.h>

#include <zephyr/kernel.h>

#include "cats/cats_node.h"
#include "cats/cats_somegather.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CATS_SERVICE_OUTPUT_MAX 256 /* largest output slice a result carries */

struct cats_service_result {
	uint32_t inference_id;
	int status;           /* CATS_OK or a negative cats_status */
	uint16_t start, count; /* this node's output slice [start, start+count) */
	int8_t values[CATS_SERVICE_OUTPUT_MAX];
	uint32_t elapsed_ms;  /* from submit to the last exchange */
	uint32_t timed_out;   /* exchanges closed by the deadline in this inference */
	struct cats_sg_stats stats; /* cumulative since start */
};

typedef void (*cats_service_result_cb_t)(const struct cats_service_result *res, void *user);

/* Decode and verify the linked partition, start the link and the service thread.
 * 0, -ENOENT (image built without a partition), -EINVAL (partition rejected: logged with the
 * cats_status), -ENOMEM (arena too small: logged with the size needed) or a link error. */
int cats_service_start(void);

/* Queue inference `inference_id` on `input` (tokens x patch int8; copied). -EBUSY while one
 * is queued or running, -EINVAL for a wrong length, -EAGAIN before cats_service_start(). */
int cats_service_submit(uint32_t inference_id, const int8_t *input, size_t len);

/* Wait for the next finished inference. 0, or -EAGAIN on timeout. */
int cats_service_wait(struct cats_service_result *res, k_timeout_t timeout);

/* Called from the service thread after every inference (NULL to remove). */
void cats_service_set_result_cb(cats_service_result_cb_t cb, void *user);

/* The running node (NULL before a successful start), e.g. for its shape and id. */
const struct cats_node *cats_service_node(void);

#ifdef __cplusplus
}
#endif

#endif /* CATS_SERVICE_H_ */
