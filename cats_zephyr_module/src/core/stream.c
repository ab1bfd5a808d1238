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
	d->cap = buf_size;
}

void cats_stream_decoder_limit(struct cats_stream_decoder *d, uint16_t max_len)
{
	if (max_len < d->max_len) {
		d->max_len = max_len;
	}
}

void cats_stream_decoder_prefix(struct cats_stream_decoder *d, uint16_t *prefix, size_t n)
{
	if (prefix != NULL && d->cap > 0 && n >= d->cap + 1) {
		d->prefix = prefix;
		d->start = d->have = d->emitted = 0;
		prefix[0] = 0;
	}
}

void cats_stream_decoder_reset(struct cats_stream_decoder *d)
{
	d->start = d->have = d->emitted = 0;
	if (d->prefix != NULL) {
		d->prefix[0] = 0;
	}
}

/* GF(2)[x] product of two CRC states modulo the CRC polynomial x^16 + x^12 + x^5 + 1. */
static uint16_t gf_mul(uint16_t a, uint16_t b)
{
	uint16_t r = 0;

	for (int i = 15; i >= 0; i--) {
		r = (r & 0x8000u) ? (uint16_t)((r << 1) ^ 0x1021u) : (uint16_t)(r << 1);
		if (b & (1u << i)) {
			r ^= a;
		}
	}
	return r;
}

/* The CRC state s carried through m zero bytes: s * x^(8m) mod P. */
static uint16_t crc_advance(uint16_t s, size_t m)
{
	static uint16_t pow2[24]; /* x^(8 * 2^k) mod P */
	static int ready;

	if (!ready) {
		uint8_t zero = 0;

		pow2[0] = cats_stream_crc16(0x0001u, &zero, 1); /* x^8 */
		for (int k = 1; k < 24; k++) {
			pow2[k] = gf_mul(pow2[k - 1], pow2[k - 1]);
		}
		ready = 1;
	}
	for (int k = 0; m != 0 && k < 24; k++, m >>= 1) {
		if (m & 1u) {
			s = gf_mul(s, pow2[k]);
		}
	}
	return s;
}

/* CRC-16 (init 0xFFFF) of buf[a, b). With prefix states P (P[i+1] = crc(P[i], buf[i]), from
 * any origin): crc(0xFFFF, buf[a, b)) = P[b] ^ advance(P[a] ^ 0xFFFF, b - a). */
static uint16_t held_crc(const struct cats_stream_decoder *d, size_t a, size_t b)
{
	if (d->prefix == NULL) {
		return cats_stream_crc16(0xFFFFu, &d->buf[a], b - a);
	}
	return (uint16_t)(d->prefix[b] ^ crc_advance((uint16_t)(d->prefix[a] ^ 0xFFFFu), b - a));
}

static void drop(struct cats_stream_decoder *d, size_t n)
{
	d->start += n;
	d->skipped += (uint32_t)n;
	if (d->start == d->have) {
		cats_stream_decoder_reset(d);
	}
}

/* Append bytes to what is held, moving the held bytes down first when they would not fit. */
static void append(struct cats_stream_decoder *d, const uint8_t *p, size_t n)
{
	if (d->have + n > d->cap) {
		size_t held = d->have - d->start;

		memmove(d->buf, &d->buf[d->start], held);
		if (d->prefix != NULL) {
			memmove(d->prefix, &d->prefix[d->start], (held + 1) * sizeof(d->prefix[0]));
		}
		d->start = 0;
		d->have = held;
	}
	memcpy(&d->buf[d->have], p, n);
	if (d->prefix != NULL) {
		for (size_t i = 0; i < n; i++) {
			d->prefix[d->have + i + 1] =
				cats_stream_crc16(d->prefix[d->have + i], &p[i], 1);
		}
	}
	d->have += n;
}

/* Bytes the held candidate still needs before it can be judged (0: judge it now). Drops
 * whatever cannot start a message; rejects bad candidates (drop their first byte, rescan). */
static size_t scan(struct cats_stream_decoder *d, struct cats_stream_msg *msg, int *found)
{
	*found = 0;
	for (;;) {
		const uint8_t *p;
		size_t i, n, held;
		uint16_t crc;

		held = d->have - d->start;
		p = &d->buf[d->start];
		i = 0;
		if (held && p[0] != CATS_STREAM_SYNC0) {
			const uint8_t *s = memchr(p, CATS_STREAM_SYNC0, held);

			i = s != NULL ? (size_t)(s - p) : held;
		}
		if (i) {
			drop(d, i);
			continue;
		}
		if (held < 2) {
			return 2 - held;
		}
		if (p[1] != CATS_STREAM_SYNC1) {
			drop(d, 1);
			continue;
		}
		if (held < CATS_STREAM_HEADER) {
			return CATS_STREAM_HEADER - held;
		}
		n = (size_t)p[3] | ((size_t)p[4] << 8);
		if (n > d->max_len) {
			d->bad_length++;
			drop(d, 1);
			continue;
		}
		if (held < n + CATS_STREAM_OVERHEAD) {
			return n + CATS_STREAM_OVERHEAD - held;
		}
		crc = held_crc(d, d->start + 2, d->start + 5 + n);
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
		d->start += d->emitted;
		d->emitted = 0;
		if (d->start == d->have) {
			cats_stream_decoder_reset(d);
		}
	}
}

int cats_stream_flush(struct cats_stream_decoder *d, struct cats_stream_msg *msg)
{
	int found;

	release(d);
	while (d->have > d->start) {
		(void)scan(d, msg, &found);
		if (found) {
			return 1;
		}
		if (d->have > d->start) {
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
		if (d->have == d->start) {
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
		append(d, &data[off], take);
		off += take;
	}
	if (used != NULL) {
		*used = off;
	}
	return found;
}
