/*
 * SomeGather engine: ColumnFrames (format v2, proto/cats.proto) of the current exchange out,
 * checked frames in.
 *
 * A v2 frame carries only inference id (low 16 bits), exchange, fragment and the payload; the
 * sender is the link-layer source (cats_auth binds it) and the frame's columns and rows follow
 * from the frame plan, the same in C and in tools/cats/artefacts/frames.py (golden vectors in
 * tests/golden/frames hold both to the same bytes):
 *  - the sender's kept columns of the exchange, ascending; a receiver finds them as the run of
 *    its held columns owned by the sender (held = own + every other node's kept columns);
 *  - a fixed header budget: inference id 4 (tag + varint of 0xFFFF), the exchange field,
 *    fragment 3 (tag + 2-byte varint: at most 16384 frames); P = the largest payload whose
 *    field fits the rest of the MTU; k = P / rows whole columns per frame;
 *  - k = 0 (a column taller than a frame): ceil(rows / P) frames per column, P rows each.
 * The plan is plain arithmetic on (n kept, rows, mtu, exchange): no state across frames.
 *
 * The frame is encoded by the small fixed protobuf writer below and parsed by the air-frame
 * header scanner (cats_auth_header, which also finds the payload field): still protobuf on the
 * wire, tests/test_frames.py checks both against the protobuf library. Receiving checks, in order: malformed, sender, self, stale,
 * future, then malformed against the sender's plan (fragment beyond it, payload size); then
 * stores the columns that are not complete yet (the rest are counted as duplicates). Nothing
 * is written before every check has passed, and only through cats_node_put.
 */
#include "cats/cats_somegather.h"

#include <string.h>

#include "cats/cats_auth.h"
#include "cats/cats_stream.h"
#include "node_internal.h"

/* Field numbers of ColumnFrame v2 (proto/cats.proto). */
#define SG_F_INFERENCE 11u
#define SG_F_EXCHANGE 12u
#define SG_F_FRAGMENT 13u
#define SG_F_PAYLOAD 14u
#define SG_INFERENCE_BUDGET 4u /* tag + varint of 0xFFFF */
#define SG_FRAGMENT_BUDGET 3u  /* tag + 2-byte varint */

/* The plan of one sender's exchange. */
struct sg_plan {
	uint32_t n;     /* kept columns */
	uint32_t rows;
	uint32_t per;   /* whole columns per frame; 0: columns split by rows */
	uint32_t chunk; /* payload bytes per frame (P); rows per frame when split */
	uint32_t count; /* frames */
};

static uint32_t varint_len(uint32_t v)
{
	uint32_t n = 1;

	while (v >= 0x80u) {
		v >>= 7;
		n++;
	}
	return n;
}

/* A proto3 scalar field with a one-byte tag: absent when zero. */
static uint32_t scalar_len(uint32_t v)
{
	return v ? 1u + varint_len(v) : 0u;
}

/* The plan of n columns of `rows` rows in exchange e within mtu bytes. */
static int sg_make(uint32_t e, uint32_t n, uint32_t rows, uint32_t mtu, struct sg_plan *p)
{
	uint32_t hdr = SG_INFERENCE_BUDGET + scalar_len(e) + SG_FRAGMENT_BUDGET, room, P;

	memset(p, 0, sizeof(*p));
	p->n = n;
	p->rows = rows;
	if (n == 0 || rows == 0) {
		return CATS_OK;
	}
	if (mtu < hdr + 3u) {
		return CATS_ERR_ARG; /* the MTU cannot carry one row */
	}
	room = mtu - hdr;
	P = room - 2u; /* tag + a one-byte length */
	while (P > 0 && 1u + varint_len(P) + P > room) {
		P--;
	}
	p->chunk = P;
	p->per = P / rows;
	if (p->per > 0) {
		p->count = (n + p->per - 1u) / p->per;
	} else {
		p->count = n * ((rows + P - 1u) / P);
	}
	return p->count > 0x4000u ? CATS_ERR_UNSUPPORTED : CATS_OK;
}

/* Frame f of a plan: columns [*k0, *k0 + *nk) of the kept list, rows [*r0, *r0 + *nr). */
static void sg_frame(const struct sg_plan *p, uint32_t f, uint32_t *k0, uint32_t *nk,
		     uint32_t *r0, uint32_t *nr)
{
	if (p->per > 0) {
		*k0 = f * p->per;
		*nk = p->n - *k0 < p->per ? p->n - *k0 : p->per;
		*r0 = 0;
		*nr = p->rows;
	} else {
		uint32_t q = (p->rows + p->chunk - 1u) / p->chunk;

		*k0 = f / q;
		*nk = 1;
		*r0 = (f % q) * p->chunk;
		*nr = p->rows - *r0 < p->chunk ? p->rows - *r0 : p->chunk;
	}
}

/* This node's own plan of exchange e. */
static int sg_own(const struct cats_node *n, int e, size_t mtu, struct sg_plan *p,
		  const struct cats_exchange **exp)
{
	const struct cats_exchange *ex = cats_node_exchange(n, (uint16_t)e);

	if (ex == NULL) {
		return CATS_ERR_STATE;
	}
	if (exp) {
		*exp = ex;
	}
	/* A node alone has nobody to send to. */
	return sg_make((uint32_t)e, cats_node_count(n) > 1 ? ex->n_kept : 0u, ex->rows,
		       (uint32_t)mtu, p);
}

int cats_sg_plan(const struct cats_node *n, size_t mtu)
{
	struct cats_sg_cache *c;
	struct sg_plan p;
	uint16_t e;

	if (n == NULL || mtu == 0 || mtu > CATS_SG_FRAME_MAX) {
		return CATS_ERR_ARG;
	}
	c = n->sg;
	if (c->mtu == (uint32_t)mtu) {
		return CATS_OK;
	}
	for (e = 0; e < cats_node_exchanges(n) && e < CATS_MAX_EXCHANGES; e++) {
		int rc = sg_own(n, e, mtu, &p, NULL);

		c->count[e] = rc < 0 ? rc : (int32_t)p.count;
	}
	c->mtu = (uint32_t)mtu;
	return CATS_OK;
}

uint32_t cats_sg_partition_tag(const struct cats_node *n)
{
	const uint8_t *h = cats_node_partition_hash(n);

	return (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
}

int cats_sg_frame_count(const struct cats_node *n, size_t mtu)
{
	int e;

	if (n == NULL || mtu == 0 || mtu > CATS_SG_FRAME_MAX) {
		return CATS_ERR_ARG;
	}
	e = cats_node_current_exchange(n);
	if (e < 0) {
		return CATS_ERR_STATE;
	}
	if (cats_sg_plan(n, mtu) != CATS_OK || e >= CATS_MAX_EXCHANGES) {
		return CATS_ERR_ARG;
	}
	return (int)n->sg->count[e];
}

static uint8_t *put_varint(uint8_t *o, uint32_t v)
{
	while (v >= 0x80u) {
		*o++ = (uint8_t)(v | 0x80u);
		v >>= 7;
	}
	*o++ = (uint8_t)v;
	return o;
}

static uint8_t *put_scalar(uint8_t *o, uint32_t field, uint32_t v)
{
	if (v) {
		*o++ = (uint8_t)(field << 3);
		o = put_varint(o, v);
	}
	return o;
}

int cats_sg_encode(const struct cats_node *n, uint16_t index, size_t mtu, uint8_t *buf,
		   size_t cap, struct cats_sg_stats *st)
{
	const struct cats_exchange *ex;
	struct sg_plan p;
	uint32_t k0, nk, r0, nr, j, size, len;
	uint8_t *o;
	int e, count = cats_sg_frame_count(n, mtu);

	if (count < 0) {
		return count;
	}
	if (buf == NULL || index >= (uint32_t)count) {
		return CATS_ERR_ARG;
	}
	e = cats_node_current_exchange(n);
	if (sg_own(n, e, mtu, &p, &ex) != CATS_OK) {
		return CATS_ERR_ARG;
	}
	sg_frame(&p, index, &k0, &nk, &r0, &nr);
	size = nk * nr;
	len = scalar_len(cats_node_inference(n) & CATS_SG_INFERENCE_MASK) +
	      scalar_len((uint32_t)e) + scalar_len(index) + 1u + varint_len(size) + size;
	if (len > (cap < mtu ? cap : mtu)) {
		return CATS_ERR_ARG; /* buf too small */
	}
	o = put_scalar(buf, SG_F_INFERENCE, cats_node_inference(n) & CATS_SG_INFERENCE_MASK);
	o = put_scalar(o, SG_F_EXCHANGE, (uint32_t)e);
	o = put_scalar(o, SG_F_FRAGMENT, index);
	*o++ = (uint8_t)(SG_F_PAYLOAD << 3 | 2u);
	o = put_varint(o, size);
	for (j = 0; j < nk; j++) {
		int rc = cats_node_outgoing(n, (uint16_t)(k0 + j), (uint16_t)r0, (uint16_t)nr,
					    (int8_t *)&o[j * nr]);

		if (rc < 0) {
			return rc;
		}
	}
	o += size;
	if ((uint32_t)(o - buf) != len) {
		return CATS_ERR_UNSUPPORTED; /* cannot happen */
	}
	if (st) {
		st->frames_sent++;
	}
	return (int)len;
}

static int reject(uint32_t *counter, int status)
{
	(*counter)++;
	return status;
}

/* The decoded v2 fields (proto3: absent = 0, the last occurrence wins). */
struct sg_msg {
	uint32_t inference, exchange, fragment;
	const uint8_t *payload;
	uint32_t size;
};

/* A ColumnFrame through the air-frame header scanner (cats_auth_header): the four fields with
 * their wire types, any other field skipped by its wire type. 0 or -1 (malformed). */
static int sg_parse(const uint8_t *b, size_t len, struct sg_msg *m)
{
	struct cats_auth_hdr h;

	if (cats_auth_header(CATS_AIR_COLUMN, b, len, &h) != 0) {
		return -1;
	}
	m->inference = h.inference;
	m->exchange = h.exchange;
	m->fragment = h.fragment;
	m->payload = h.payload;
	m->size = h.payload_len;
	return 0;
}

/* The sender's kept columns of exchange ex: the run held[*lo .. *lo + *cnt) it owns (owners
 * ascend with the column id, held is sorted). */
static void sender_run(const struct cats_node *n, const struct cats_exchange *ex,
		       uint32_t sender, uint32_t *lo, uint32_t *cnt)
{
	uint32_t a = 0, b = ex->n_held, hi;

	while (a < b) { /* first held column owned by >= sender */
		uint32_t m = a + (b - a) / 2u;

		if ((uint32_t)cats_node_owner(n, ex->space, ex->held[m]) < sender) {
			a = m + 1u;
		} else {
			b = m;
		}
	}
	*lo = a;
	b = ex->n_held;
	while (a < b) { /* first held column owned by > sender */
		uint32_t m = a + (b - a) / 2u;

		if ((uint32_t)cats_node_owner(n, ex->space, ex->held[m]) <= sender) {
			a = m + 1u;
		} else {
			b = m;
		}
	}
	hi = a;
	*cnt = hi - *lo;
}

int cats_sg_receive(struct cats_node *n, uint16_t sender, size_t mtu, const uint8_t *frame,
		    size_t len, struct cats_sg_stats *st)
{
	struct cats_sg_stats dummy;
	const struct cats_exchange *ex;
	struct sg_msg msg;
	struct sg_plan p;
	uint32_t j, lo, cnt, k0, nk, r0, nr;
	int cur;

	if (st == NULL) {
		memset(&dummy, 0, sizeof(dummy));
		st = &dummy;
	}
	if (n == NULL || mtu == 0 || mtu > CATS_SG_FRAME_MAX) {
		return CATS_ERR_ARG;
	}
	/* 1. malformed: does not decode or names no exchange of this partition */
	if (frame == NULL || len == 0 || len > CATS_SG_FRAME_MAX ||
	    sg_parse(frame, len, &msg) != 0 || msg.size == 0 ||
	    msg.exchange >= cats_node_exchanges(n)) {
		return reject(&st->rejected_malformed, CATS_ERR_ARG);
	}
	ex = cats_node_exchange(n, (uint16_t)msg.exchange);
	if (ex == NULL) {
		return reject(&st->rejected_malformed, CATS_ERR_ARG);
	}
	/* 2. sender (the link source) */
	if (sender >= cats_node_count(n)) {
		return reject(&st->rejected_sender, CATS_ERR_ARG);
	}
	if (sender == cats_node_id(n)) {
		return reject(&st->rejected_self, CATS_ERR_ARG);
	}
	/* 3. inference and exchange */
	cur = cats_node_current_exchange(n);
	if (msg.inference > CATS_SG_INFERENCE_MASK ||
	    msg.inference != (cats_node_inference(n) & CATS_SG_INFERENCE_MASK) || cur < 0 ||
	    msg.exchange < (uint32_t)cur) {
		return reject(&st->rejected_stale, CATS_ERR_STATE);
	}
	if (msg.exchange > (uint32_t)cur) {
		return reject(&st->rejected_future, CATS_ERR_STATE);
	}
	/* 4. the frame of the sender's plan: fragment in it, payload of its size */
	sender_run(n, ex, sender, &lo, &cnt);
	if (sg_make(msg.exchange, cnt, ex->rows, (uint32_t)mtu, &p) != CATS_OK ||
	    msg.fragment >= p.count) {
		return reject(&st->rejected_malformed, CATS_ERR_ARG);
	}
	sg_frame(&p, msg.fragment, &k0, &nk, &r0, &nr);
	if (msg.size != nk * nr) {
		return reject(&st->rejected_malformed, CATS_ERR_ARG);
	}
	/* 5. store what is not complete yet */
	st->frames_received++;
	for (j = 0; j < nk; j++) {
		uint16_t c = ex->held[lo + k0 + j];
		int rc;

		if (cats_node_has(n, c)) {
			st->duplicates++;
			continue;
		}
		rc = cats_node_put(n, (uint16_t)msg.exchange, sender, c, (uint16_t)r0,
				   (uint16_t)nr, (const int8_t *)&msg.payload[j * nr]);
		if (rc < 0) {
			return rc; /* cannot happen after the checks above */
		}
		if (cats_node_has(n, c)) {
			st->columns_received++;
		}
	}
	return CATS_OK;
}

int cats_sg_compute(struct cats_node *n, struct cats_sg_stats *st)
{
	uint16_t lost = 0;
	int rc = cats_node_compute(n, &lost);

	if (rc == CATS_OK && st) {
		st->columns_lost += lost;
	}
	return rc;
}
