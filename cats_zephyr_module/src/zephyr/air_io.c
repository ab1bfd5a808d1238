/*
 * The node's side of the gateway protocol on the air, shared by every link backend:
 *
 *  - InputFrames (AIR_INPUT): the gateway broadcasts the model input cut into fragments; they
 *    are assembled here (any order, duplicates ignored) and the complete input is handed to
 *    cats_service_submit(). A fragment of another partition, or one that does not fit the
 *    node's input shape, is dropped.
 *  - OutputFrames (AIR_OUTPUT): after each inference the node broadcasts its output slice in
 *    frames of at most the link's MTU; the first one carries the NodeCounters.
 */
#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/sys/util.h>

#include <pb_decode.h>

#include "cats.pb.h"
#include "cats/cats_output.h"
#include "cats/cats_runner.h"
#include "cats/cats_somegather.h"
#include "cats/cats_stream.h"
#include "cats_zephyr.h"

LOG_MODULE_DECLARE(cats, CONFIG_CATS_LOG_LEVEL);

#define INPUT_MAX_FRAGMENTS 64 /* fragment bitmap width (1024 bytes need 12 at MTU 115) */

static struct {
	bool active;
	uint32_t id;
	uint32_t fragments;
	uint64_t seen; /* fragment bitmap */
	size_t end;
	int8_t buf[CONFIG_CATS_INPUT_MAX];
} input;
static uint32_t timed_out_total;

void cats_air_node_input(uint16_t src, const uint8_t *frame, size_t len)
{
	cats_InputFrame f = cats_InputFrame_init_zero;
	pb_istream_t is;
	const struct cats_node *node = cats_service_node();
	struct cats_auth *auth = cats_service_auth();
	size_t want;
	int rc;

	if (len < 1 || frame[0] != CATS_AIR_INPUT || node == NULL || auth == NULL) {
		return;
	}
	/* the link's RX context; the runner's thread uses the same state for ColumnFrames */
	rc = cats_auth_open_air(auth, src, cats_node_inference(node), frame, len, NULL);
	if (rc < 0) {
		LOG_DBG("InputFrame from station %u rejected (authentication %d)", src, rc);
		return;
	}
	is = pb_istream_from_buffer(&frame[1], (size_t)rc);
	if (!pb_decode(&is, cats_InputFrame_fields, &f) ||
	    f.partition_tag != cats_sg_partition_tag(node)) {
		LOG_DBG("InputFrame ignored");
		return;
	}
	want = (size_t)cats_node_shape(node)->tokens * cats_node_shape(node)->patch;
	if (!input.active || input.id != f.inference_id) {
		input.active = true;
		input.id = f.inference_id;
		input.fragments = f.fragments;
		input.seen = 0;
		input.end = 0;
	}
	if (f.fragments != input.fragments || f.fragments == 0 ||
	    f.fragments > INPUT_MAX_FRAGMENTS || f.fragment >= f.fragments ||
	    want > sizeof(input.buf) || f.offset > want || f.payload.size > want - f.offset) {
		LOG_WRN("InputFrame %u/%u of inference %u does not fit the input", f.fragment,
			f.fragments, f.inference_id);
		return;
	}
	if (input.seen & (1ull << f.fragment)) {
		return;
	}
	input.seen |= 1ull << f.fragment;
	memcpy(&input.buf[f.offset], f.payload.bytes, f.payload.size);
	input.end = MAX(input.end, f.offset + f.payload.size);
	if (input.seen != (f.fragments == 64 ? ~0ull : (1ull << f.fragments) - 1u)) {
		return;
	}
	input.active = false;
	if (input.end != want) {
		LOG_WRN("input %u has %zu bytes, want %zu", input.id, input.end, want);
		return;
	}
	rc = cats_service_submit(input.id, input.buf, want);
	if (rc != 0) {
		LOG_WRN("input %u refused: %d", input.id, rc);
	}
}

static int send_air(void *ctx, const uint8_t *air, size_t len)
{
	const struct cats_zlink *zl = ctx;

	if (zl->air_send(air, len) != 0) {
		LOG_WRN("OutputFrame not sent");
	}
	return 0; /* the other frames still go out */
}

void cats_air_node_report(const struct cats_zlink *zl, const struct cats_service_result *res)
{
	static cats_OutputFrame f;
	static uint8_t buf[1 + CATS_SG_FRAME_MAX];
	const struct cats_node *node = cats_service_node();
	const size_t mtu = MIN(zl->air_mtu, sizeof(buf)) - 1; /* the OutputFrame's bytes */

	timed_out_total += res->timed_out;
	memset(&f, 0, sizeof(f));
	f.inference_id = res->inference_id;
	f.partition_tag = node != NULL ? cats_sg_partition_tag(node) : 0;
	f.sender = node != NULL ? cats_node_id(node) : 0;
	f.status = res->status;
	f.start = res->start;
	cats_output_counters(&res->stats, &cats_service_auth()->stats, &f.counters);
	/* Every node finishes the last exchange at about the same time: on a half-duplex radio
	 * without acknowledgements their OutputFrames would collide, so they take ordered turns
	 * as the exchanges do (a slot of two frames each: one frame carries an output slice of
	 * the presets here; CONFIG_CATS_TURN_FRAME_US, 0 on the simulation link). */
	if (CONFIG_CATS_TURN_FRAME_US > 0 && node != NULL) {
		k_sleep(K_USEC((uint64_t)cats_node_id(node) * 2u * CONFIG_CATS_TURN_FRAME_US));
	}
	f.counters.exchanges_timed_out = timed_out_total;
	f.counters.compute_us = res->elapsed_ms * 1000u;
	f.counters.macs = node != NULL ? cats_runner_macs(node) : 0;
	if (cats_output_send(&f, res->values, res->count, mtu, cats_service_auth(), buf,
			     sizeof(buf), send_air,
			     (void *)zl) != CATS_OK) {
		LOG_ERR("MTU %zu too small for an OutputFrame", mtu);
	}
}
