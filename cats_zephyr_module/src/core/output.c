/*
 * OutputFrames (include/cats/cats_output.h).
 */
#include "cats/cats_output.h"

#include <string.h>

#include <pb_encode.h>

#include "cats/cats_node.h"
#include "cats/cats_stream.h"

void cats_output_counters(const struct cats_sg_stats *st, const struct cats_auth_stats *as,
			  cats_NodeCounters *c)
{
	c->frames_sent = st->frames_sent;
	c->frames_received = st->frames_received;
	c->columns_received = st->columns_received;
	c->columns_lost = st->columns_lost;
	c->rejected_malformed = st->rejected_malformed;
	c->rejected_partition = st->rejected_partition;
	c->rejected_stale = st->rejected_stale;
	c->rejected_future = st->rejected_future;
	c->rejected_column = st->rejected_column;
	c->rejected_self = st->rejected_self;
	c->rejected_sender = st->rejected_sender;
	c->duplicates = st->duplicates;
	if (as != NULL) { /* the air frames' authentication (cats_auth) */
		c->rejected_malformed += as->rejected_malformed;
		c->rejected_sender += as->rejected_sender;
		c->rejected_mic = as->rejected_mic;
		c->rejected_replay = as->rejected_replay;
		c->frames_authenticated = as->accepted;
	}
}

int cats_output_send(cats_OutputFrame *f, const int8_t *y, size_t count, size_t mtu,
		     struct cats_auth *auth, uint8_t *buf, size_t cap,
		     int (*send)(void *ctx, const uint8_t *air, size_t len), void *ctx)
{
	size_t offset = 0;
	int first = 1;

	if (auth == NULL || cap < 2 || mtu > cap - 1 || mtu <= auth->mic_len) {
		return CATS_ERR_ARG;
	}
	mtu -= auth->mic_len; /* the OutputFrame's bytes */
	do {
		size_t hdr = 0, room, n;
		pb_ostream_t os;
		int rc;

		f->has_counters = first != 0;
		f->offset = (uint32_t)offset;
		f->payload.size = 0;
		(void)pb_get_encoded_size(&hdr, cats_OutputFrame_fields, f);
		room = mtu > hdr + 3 ? mtu - hdr - 3 : 0; /* payload tag + length + varint growth */
		n = count - offset;
		if (n > room) {
			n = room;
		}
		if (n > sizeof(f->payload.bytes)) {
			n = sizeof(f->payload.bytes);
		}
		if (n == 0 && offset < count && !first) {
			return CATS_ERR_ARG;
		}
		if (n > 0) {
			memcpy(f->payload.bytes, &y[offset], n);
		}
		f->payload.size = (pb_size_t)n;
		buf[0] = CATS_AIR_OUTPUT;
		os = pb_ostream_from_buffer(&buf[1], mtu);
		if (!pb_encode(&os, cats_OutputFrame_fields, f)) {
			return CATS_ERR_ARG;
		}
		rc = cats_auth_seal(auth, CATS_AIR_OUTPUT, f->inference_id, &buf[1],
				    os.bytes_written, cap - 1);
		if (rc < 0) {
			return rc;
		}
		rc = send(ctx, buf, 1u + (size_t)rc);
		if (rc < 0) {
			return rc;
		}
		offset += n;
		first = 0;
	} while (offset < count);
	return CATS_OK;
}
