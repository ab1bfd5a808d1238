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
#include <pb_encode.h>

#include "cats.pb.h"
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

void cats_air_node_input(const uint8_t *frame, size_t len)
{
	cats_InputFrame f = cats_InputFrame_init_zero;
	pb_istream_t is;
	const struct cats_node *node = cats_service_node();
	size_t want;
	int rc;

	if (len < 1 || frame[0] != CATS_AIR_INPUT || node == NULL) {
		return;
	}
	is = pb_istream_from_buffer(&frame[1], len - 1);
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

void cats_air_node_report(const struct cats_zlink *zl, const struct cats_service_result *res)
{
	static cats_OutputFrame f;
	static uint8_t buf[1 + CATS_SG_FRAME_MAX];
	const struct cats_node *node = cats_service_node();
	const struct cats_sg_stats *st = &res->stats;
	const size_t mtu = MIN(zl->air_mtu, sizeof(buf)) - 1; /* the OutputFrame's bytes */
	size_t offset = 0;
	bool first = true;

	timed_out_total += res->timed_out;
	memset(&f, 0, sizeof(f));
	f.inference_id = res->inference_id;
	f.partition_tag = node != NULL ? cats_sg_partition_tag(node) : 0;
	f.sender = node != NULL ? cats_node_id(node) : 0;
	f.status = res->status;
	f.start = res->start;
	f.counters.frames_sent = st->frames_sent;
	f.counters.frames_received = st->frames_received;
	f.counters.columns_received = st->columns_received;
	f.counters.columns_lost = st->columns_lost;
	f.counters.rejected_malformed = st->rejected_malformed;
	f.counters.rejected_partition = st->rejected_partition;
	f.counters.rejected_stale = st->rejected_stale;
	f.counters.rejected_future = st->rejected_future;
	f.counters.rejected_column = st->rejected_column;
	f.counters.rejected_self = st->rejected_self;
	f.counters.rejected_sender = st->rejected_sender;
	f.counters.duplicates = st->duplicates;
	f.counters.exchanges_timed_out = timed_out_total;
	f.counters.compute_us = res->elapsed_ms * 1000u;
	f.counters.macs = node != NULL ? cats_runner_macs(node) : 0;
	do {
		size_t hdr = 0, room, n;
		pb_ostream_t os;

		f.has_counters = first;
		f.offset = offset;
		f.payload.size = 0;
		(void)pb_get_encoded_size(&hdr, cats_OutputFrame_fields, &f);
		room = mtu > hdr + 3 ? mtu - hdr - 3 : 0; /* payload tag + length + varint growth */
		n = MIN(MIN((size_t)res->count - offset, room), sizeof(f.payload.bytes));
		if (n == 0 && offset < res->count && !first) {
			LOG_ERR("MTU %zu too small for an OutputFrame", mtu);
			return;
		}
		memcpy(f.payload.bytes, &res->values[offset], n);
		f.payload.size = n;
		buf[0] = CATS_AIR_OUTPUT;
		os = pb_ostream_from_buffer(&buf[1], mtu);
		if (!pb_encode(&os, cats_OutputFrame_fields, &f)) {
			LOG_ERR("OutputFrame does not encode");
			return;
		}
		if (zl->air_send(buf, 1 + os.bytes_written) != 0) {
			LOG_WRN("OutputFrame %zu of inference %u not sent", offset,
				f.inference_id);
		}
		offset += n;
		first = false;
	} while (offset < res->count);
}
