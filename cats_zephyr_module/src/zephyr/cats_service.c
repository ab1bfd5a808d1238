/*
 * The CATS inference service: one thread running this node's share of each inference.
 *
 *  - The partition (weights.bin + manifest.pb of node CATS_NODE_ID, -DCATS_PARTITION_DIR) is
 *    compiled in as two const arrays (partition.c), so it sits in flash and the core reads
 *    the weights in place; the manifest is decoded into the static arena
 *    (CONFIG_CATS_ARENA_SIZE bytes), which also holds every activation and receive buffer.
 *  - The thread sleeps until cats_service_submit() hands it the gateway's input, then runs
 *    every exchange with cats_runner: encode the node's kept columns into ColumnFrames and
 *    send them on the link, feed received frames to cats_sg_receive() until all held columns
 *    are in or CONFIG_CATS_EXCHANGE_TIMEOUT_MS has passed, cats_sg_compute().
 *  - The output slice goes to cats_service_wait()ers, the result callback and the link
 *    (OutputFrames for the gateway, air_io.c).
 */
#include <errno.h>
#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>

#include "cats/cats_node.h"
#include "cats/cats_runner.h"
#include "cats/cats_service.h"
#include "cats/cats_somegather.h"
#include "cats_zephyr.h"

LOG_MODULE_DECLARE(cats, CONFIG_CATS_LOG_LEVEL);

#if !defined(CONFIG_CATS_LINK_IEEE802154) && !defined(CONFIG_CATS_LINK_BLE) &&                 \
	!defined(CONFIG_CATS_LINK_SIM)
#error "CONFIG_CATS_SERVICE needs one CONFIG_CATS_LINK_* (see cats_zephyr_module/Kconfig)"
#endif

/* The node's whole memory plan. */
static uint8_t cats_arena[CONFIG_CATS_ARENA_SIZE] __aligned(8);

static struct cats_node *node;
static struct cats_port port;
static struct cats_zlink zlink;
static struct cats_runner runner;
static struct cats_auth auth;
static bool auth_ready;

struct cats_auth *cats_service_auth(void)
{
	return auth_ready ? &auth : NULL;
}

/* One pending inference at a time: the input is copied here by submit(). */
static int8_t cats_input[CONFIG_CATS_INPUT_MAX];
static size_t input_len;
static uint32_t input_id;
static atomic_t inputs;
static int64_t input_t0;
static bool busy;
static K_MUTEX_DEFINE(lock);
static K_SEM_DEFINE(work_sem, 0, 1);

K_MSGQ_DEFINE(cats_result_q, sizeof(struct cats_service_result), 1, 4);
static struct cats_service_result result;
static cats_service_result_cb_t result_cb;
static void *result_user;

static K_THREAD_STACK_DEFINE(cats_stack, CONFIG_CATS_SERVICE_STACK_SIZE);
static struct k_thread cats_thread;

static void link_idle(void *ctx, uint32_t max_ms)
{
	ARG_UNUSED(ctx);
	/* Wake on the first received frame, or after at most 10 ms to check the deadline. */
	zlink.wait(zlink.link.ctx, MIN(max_ms, 10U));
}

static void publish(int status)
{
	uint16_t start = 0, count = 0;
	const int8_t *y = status == CATS_OK ? cats_node_output(node, &start, &count) : NULL;

	memset(&result, 0, sizeof(result));
	result.inference_id = input_id;
	result.status = status;
	result.elapsed_ms = (uint32_t)(k_uptime_get() - input_t0);
	result.timed_out = runner.exchanges_timed_out;
	result.stats = runner.stats;
	if (y != NULL) {
		count = MIN(count, CATS_SERVICE_OUTPUT_MAX);
		result.start = start;
		result.count = count;
		memcpy(result.values, y, count);
	}
	LOG_INF("inference %u: %s, %u ms, %u exchanges timed out, %u columns lost so far",
		result.inference_id, cats_strerror(status), result.elapsed_ms, result.timed_out,
		result.stats.columns_lost);
	cats_air_node_report(&zlink, &result);
	if (result_cb != NULL) {
		result_cb(&result, result_user);
	}
	k_msgq_purge(&cats_result_q);
	(void)k_msgq_put(&cats_result_q, &result, K_NO_WAIT);
}

static void cats_service_thread(void *p1, void *p2, void *p3)
{
	ARG_UNUSED(p1);
	ARG_UNUSED(p2);
	ARG_UNUSED(p3);

	for (;;) {
		int rc;

		k_sem_take(&work_sem, K_FOREVER);
		runner.exchanges_timed_out = 0;
		rc = cats_runner_infer(&runner, input_id, cats_input, input_len);
		publish(rc);
		k_mutex_lock(&lock, K_FOREVER);
		busy = false;
		k_mutex_unlock(&lock);
	}
}

int cats_service_start(void)
{
	size_t manifest_len, blob_len, needed = 0;
	const uint8_t *manifest = cats_partition_get_manifest(&manifest_len);
	const uint8_t *blob = cats_partition_get_blob(&blob_len);
	int rc;

	if (manifest_len == 0) {
		LOG_ERR("built without a partition (-DCATS_PARTITION_DIR=... -DCATS_NODE_ID=...)");
		return -ENOENT;
	}
	if (node != NULL) {
		return -EALREADY;
	}
	rc = cats_node_init(&node, manifest, manifest_len, blob, blob_len, cats_arena,
			    sizeof(cats_arena), &needed);
	if (rc == CATS_ERR_ARENA) {
		LOG_ERR("arena too small: %zu bytes needed, CONFIG_CATS_ARENA_SIZE=%d", needed,
			CONFIG_CATS_ARENA_SIZE);
		node = NULL;
		return -ENOMEM;
	}
	if (rc != CATS_OK) {
		LOG_ERR("partition rejected: %s (%d)", cats_strerror(rc), rc);
		node = NULL;
		return -EINVAL;
	}
	if (cats_node_id(node) != CONFIG_CATS_NODE_ID) {
		LOG_ERR("partition is for node %u, CONFIG_CATS_NODE_ID=%d", cats_node_id(node),
			CONFIG_CATS_NODE_ID);
		node = NULL;
		return -EINVAL;
	}
	LOG_INF("node %u of %u: %u exchanges, arena %zu of %d bytes", cats_node_id(node),
		cats_node_count(node), cats_node_exchanges(node),
		cats_node_arena_needed(manifest, manifest_len), CONFIG_CATS_ARENA_SIZE);

	{
		uint8_t key[CATS_AUTH_KEY_LEN];

		rc = cats_zephyr_key(key);
		if (rc == 0 && cats_auth_init(&auth, key, CONFIG_CATS_MIC_LEN,
					      cats_sg_partition_tag(node), cats_node_id(node),
					      cats_node_count(node)) != CATS_OK) {
			LOG_ERR("%u nodes: more than this build authenticates",
				cats_node_count(node));
			rc = -EINVAL;
		}
		memset(key, 0, sizeof(key));
		if (rc != 0) {
			node = NULL;
			return rc;
		}
		auth_ready = true;
	}
	rc = cats_link_start(&zlink, cats_node_id(node), cats_node_count(node),
			     cats_sg_partition_tag(node), cats_air_node_input);
	if (rc < 0) {
		LOG_ERR("link start failed: %d", rc);
		node = NULL;
		return rc;
	}
	cats_port_zephyr_init(&port, &zlink.link);
	cats_runner_init(&runner, node, &port, &auth, CONFIG_CATS_EXCHANGE_TIMEOUT_MS);
	runner.idle = link_idle;
	runner.turn_us_per_frame = CONFIG_CATS_TURN_FRAME_US;

	k_thread_create(&cats_thread, cats_stack, K_THREAD_STACK_SIZEOF(cats_stack),
			cats_service_thread, NULL, NULL, NULL, CONFIG_CATS_SERVICE_PRIORITY, 0,
			K_NO_WAIT);
	k_thread_name_set(&cats_thread, "cats");
	return 0;
}

int cats_service_submit(uint32_t inference_id, const int8_t *input, size_t len)
{
	const struct cats_model_shape *shape;
	int rc = 0;

	if (node == NULL) {
		return -EAGAIN;
	}
	shape = cats_node_shape(node);
	if (len != (size_t)shape->tokens * shape->patch || len > sizeof(cats_input)) {
		return -EINVAL;
	}
	k_mutex_lock(&lock, K_FOREVER);
	if (busy) {
		rc = -EBUSY;
	} else {
		busy = true;
		memcpy(cats_input, input, len);
		input_len = len;
		input_id = inference_id;
		input_t0 = k_uptime_get();
		atomic_inc(&inputs);
		k_sem_give(&work_sem);
	}
	k_mutex_unlock(&lock);
	return rc;
}

int cats_service_wait(struct cats_service_result *res, k_timeout_t timeout)
{
	return k_msgq_get(&cats_result_q, res, timeout) == 0 ? 0 : -EAGAIN;
}

void cats_service_set_result_cb(cats_service_result_cb_t cb, void *user)
{
	result_user = user;
	result_cb = cb;
}

const struct cats_node *cats_service_node(void)
{
	return node;
}

uint32_t cats_service_inputs(void)
{
	return (uint32_t)atomic_get(&inputs);
}
