/*
 * The framed byte stream (see include/cats/cats_stream.h and tools/cats/wire/stream.py).
 */
#include "cats/cats_stream.h"

#include <string.h>

uint16_t cats_stream_crc16(uint16_t crc, const uint8_t *p, size_t n)
{
	while (n--) {
		crc ^= (uint16_t)((uint16_t)*p++ << 8);
		for (int i = 0; i < 8; i++) {
			crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
		}
	}
	return crc;
}

uint16_t cats_stream_header(uint8_t type, uint16_t len, uint8_t head[CATS_STREAM_HEADER])
{
	head[0] = CATS_STREAM_SYNC0;
	head[1] = CATS_STREAM_SYNC1;
	head[2] = type;
	head[3] = (uint8_t)(len & 0xFFu);
	head[4] = (uint8_t)(len >> 8);
	return cats_stream_crc16(0xFFFFu, &head[2], 3);
}

int cats_stream_encode(uint8_t type, const uint8_t *a, size_t na, const uint8_t *b, size_t nb,
		       uint8_t *out, size_t cap)
{
	size_t n = na + nb;
	uint16_t crc;

	if (n > CATS_STREAM_MAX_LEN || n < na || cap < n + CATS_STREAM_OVERHEAD) {
		return -1;
	}
	crc = cats_stream_header(type, (uint16_t)n, out);
	if (na) {
		memcpy(&out[CATS_STREAM_HEADER], a, na);
	}
	if (nb) {
		memcpy(&out[CATS_STREAM_HEADER + na], b, nb);
	}
	crc = cats_stream_crc16(crc, &out[CATS_STREAM_HEADER], n);
	out[CATS_STREAM_HEADER + n] = (uint8_t)(crc & 0xFFu);
	out[CATS_STREAM_HEADER + n + 1] = (uint8_t)(crc >> 8);
	return (int)(n + CATS_STREAM_OVERHEAD);
}

void cats_stream_decoder_init(struct cats_stream_decoder *d, uint8_t *buf, size_t buf_size)
{
	size_t max = buf_size > CATS_STREAM_OVERHEAD ? buf_size - CATS_STREAM_OVERHEAD : 0;

	memset(d, 0, sizeof(*d));
	if (buf == NULL || buf_size < CATS_STREAM_OVERHEAD) {
		return; /* cap 0: every byte is skipped */
	}
	d->buf = buf;
	d->max_len = (uint16_t)(max > 0xFFFFu ? 0xFFFFu : max);
	d->cap = (size_t)d->max_len + CATS_STREAM_OVERHEAD;
}

void cats_stream_decoder_reset(struct cats_stream_decoder *d)
{
	d->have = 0;
	d->emitted = 0;
}

static void drop(struct cats_stream_decoder *d, size_t n)
{
	d->have -= n;
	if (d->have) {
		memmove(d->buf, &d->buf[n], d->have);
	}
	d->skipped += (uint32_t)n;
}

/* Bytes the held candidate still needs before it can be judged (0: judge it now). Drops
 * whatever cannot start a message; rejects bad candidates (drop their first byte, rescan). */
static size_t scan(struct cats_stream_decoder *d, struct cats_stream_msg *msg, int *found)
{
	*found = 0;
	for (;;) {
		const uint8_t *p = d->buf;
		size_t i = 0, n;
		uint16_t crc;

		while (i < d->have && p[i] != CATS_STREAM_SYNC0) {
			i++;
		}
		if (i) {
			drop(d, i);
		}
		if (d->have < 2) {
			return 2 - d->have;
		}
		if (p[1] != CATS_STREAM_SYNC1) {
			drop(d, 1);
			continue;
		}
		if (d->have < CATS_STREAM_HEADER) {
			return CATS_STREAM_HEADER - d->have;
		}
		n = (size_t)p[3] | ((size_t)p[4] << 8);
		if (n > d->max_len) {
			d->bad_length++;
			drop(d, 1);
			continue;
		}
		if (d->have < n + CATS_STREAM_OVERHEAD) {
			return n + CATS_STREAM_OVERHEAD - d->have;
		}
		crc = cats_stream_crc16(0xFFFFu, &p[2], 3 + n);
		if (crc != (uint16_t)(p[5 + n] | (p[6 + n] << 8))) {
			d->bad_crc++;
			drop(d, 1);
			continue;
		}
		msg->type = p[2];
		msg->len = (uint16_t)n;
		msg->payload = &p[CATS_STREAM_HEADER];
		d->emitted = n + CATS_STREAM_OVERHEAD;
		d->messages++;
		*found = 1;
		return 0;
	}
}

/* The message returned last: not skipped bytes, just gone. */
static void release(struct cats_stream_decoder *d)
{
	if (d->emitted) {
		d->have -= d->emitted;
		if (d->have) {
			memmove(d->buf, &d->buf[d->emitted], d->have);
		}
		d->emitted = 0;
	}
}

int cats_stream_flush(struct cats_stream_decoder *d, struct cats_stream_msg *msg)
{
	int found;

	release(d);
	while (d->have) {
		(void)scan(d, msg, &found);
		if (found) {
			return 1;
		}
		if (d->have) {
			d->stalled++;
			drop(d, 1);
		}
	}
	return 0;
}

int cats_stream_decode(struct cats_stream_decoder *d, const uint8_t *data, size_t len,
		       size_t *used, struct cats_stream_msg *msg)
{
	size_t off = 0;
	int found;

	if (d->cap == 0) {
		d->skipped += (uint32_t)len;
		if (used != NULL) {
			*used = len;
		}
		return 0;
	}
	release(d);
	for (;;) {
		size_t need = scan(d, msg, &found);
		size_t take;

		if (found) {
			break;
		}
		if (off == len) {
			break;
		}
		if (d->have == 0) {
			/* Hunting: skip to the next possible sync byte without copying. */
			const uint8_t *s = memchr(&data[off], CATS_STREAM_SYNC0, len - off);
			size_t skip = s != NULL ? (size_t)(s - &data[off]) : len - off;

			d->skipped += (uint32_t)skip;
			off += skip;
			if (off == len) {
				break;
			}
		}
		take = len - off < need ? len - off : need;
		memcpy(&d->buf[d->have], &data[off], take);
		d->have += take;
		off += take;
	}
	if (used != NULL) {
		*used = off;
	}
	return found;
}
