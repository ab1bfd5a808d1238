/*
 * SomeGather engine: ColumnFrames of the current exchange out, checked frames in.
 *
 * The fragmentation rule is the one of tools/cats/artefacts/frames.py (the Python mirror;
 * golden vectors in tests/golden/frames hold both to the same bytes):
 *  - the node's kept columns (ascending ids) go out as whole columns, greedily as many per
 *    frame as fit the MTU; all columns of such a frame carry rows [0, rows);
 *  - only a column that does not fit an empty frame alone is split into row chunks, each the
 *    largest that fits, one chunk per frame; the next column starts a new frame;
 *  - lengths are the exact protobuf encoding with a worst-case header budget (inference id
 *    0xFFFF, ids go on the air modulo 2^16; a non-zero partition tag), so a real frame is
 *    never longer than planned;
 *  - `fragments` is in every header, so the plan is the fixed point of packing with a guessed
 *    count (1, then the count just obtained; it never shrinks).
 * A frame's columns are a contiguous run of the kept list, so a frame is (k0, nk, rows).
 *
 * Receiving decodes into a stack ColumnFrame (nanopb, fixed sizes from proto/cats.options)
 * and checks, in order: malformed, partition tag, sender id, self, stale, future, columns;
 * then stores the columns that are not complete yet (the rest are counted as duplicates).
 * Nothing is written before every check has passed, and only through cats_node_put.
 */
#include "cats/cats_somegather.h"

#include <string.h>

#include "cats.pb.h"
#include "pb_decode.h"
#include "pb_encode.h"

/* The nanopb options must give ColumnFrame static arrays of at least these sizes. */
#define SG_ASSERT(name, cond) typedef char sg_assert_##name[(cond) ? 1 : -1]
SG_ASSERT(column_ids_static, sizeof(((cats_ColumnFrame *)0)->column_ids) /
				     sizeof(((cats_ColumnFrame *)0)->column_ids[0]) ==
			     CATS_SG_MAX_COLUMNS);
SG_ASSERT(column_ids_16bit, sizeof(((cats_ColumnFrame *)0)->column_ids[0]) == 2);
/* Fields a frame of CATS_SG_FRAME_MAX bytes spends besides the payload, at least: inference
 * id 4 (budget), tag 5, row_count 2, one column id 3, payload tag + length 3. */
SG_ASSERT(payload_static,
	  sizeof(((cats_ColumnFrame *)0)->payload.bytes) >= CATS_SG_FRAME_MAX - 17);

#define SG_INFERENCE_BUDGET 0xFFFFu /* header budget: the longest on-air inference id */

/* One frame of the plan: kept[k0 .. k0+nk) rows [row_start, row_start+row_count). */
struct sg_frame {
	uint32_t k0, nk;
	uint32_t row_start, row_count;
	uint32_t len; /* budgeted encoded length */
};

struct sg_plan {
	uint32_t exchange, sender, rows, mtu;
	const uint16_t *kept;
	uint32_t n_kept;
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

/* A length-delimited field of n bytes: absent when empty. */
static uint32_t delimited_len(uint32_t n)
{
	return n ? 1u + varint_len(n) + n : 0u;
}

static uint32_t frame_len(const struct sg_plan *p, uint32_t i, uint32_t n, uint32_t ids_bytes,
			  uint32_t cols, uint32_t row_start, uint32_t row_count)
{
	return 1u + varint_len(SG_INFERENCE_BUDGET) + scalar_len(p->exchange) +
	       scalar_len(p->sender) + scalar_len(i) + scalar_len(n) + 5u /* fixed32 tag */ +
	       scalar_len(row_start) + scalar_len(row_count) + delimited_len(ids_bytes) +
	       delimited_len(cols * row_count);
}

/* Frame i of a plan with n fragments: kept[k0 .. k0+nk) (ids_bytes of column ids), rows
 * [row_start, row_start+row_count). */
static void set_frame(struct sg_frame *out, const struct sg_plan *p, uint32_t i, uint32_t n,
		      uint32_t k0, uint32_t nk, uint32_t ids_bytes, uint32_t row_start,
		      uint32_t row_count)
{
	out->k0 = k0;
	out->nk = nk;
	out->row_start = row_start;
	out->row_count = row_count;
	out->len = frame_len(p, i, n, ids_bytes, nk, row_start, row_count);
}

/*
 * Greedy packing for a guessed fragment count n. Returns the number of frames, or a negative
 * status; when `want` < that number, *out receives frame `want` and the walk stops there,
 * returning want + 1.
 */
static int32_t sg_pack(const struct sg_plan *p, uint32_t n, uint32_t want, struct sg_frame *out)
{
	uint32_t i = 0, k, cur_k0 = 0, cur_n = 0, cur_ids = 0;

	for (k = 0; k < p->n_kept; k++) {
		uint32_t vc = varint_len(p->kept[k]);
		uint32_t start;

		if (frame_len(p, i, n, cur_ids + vc, cur_n + 1u, 0, p->rows) <= p->mtu) {
			if (cur_n == 0) {
				cur_k0 = k;
			}
			cur_n++;
			cur_ids += vc;
			continue;
		}
		if (cur_n) {
			if (i == want) {
				set_frame(out, p, i, n, cur_k0, cur_n, cur_ids, 0, p->rows);
				return (int32_t)i + 1;
			}
			i++;
			cur_n = 0;
			cur_ids = 0;
		}
		if (frame_len(p, i, n, vc, 1u, 0, p->rows) <= p->mtu) {
			cur_k0 = k;
			cur_n = 1;
			cur_ids = vc;
			continue;
		}
		/* The column alone does not fit: row chunks, each the largest that fits. */
		for (start = 0; start < p->rows;) {
			/* upper bound: the row_count and payload fields take >= 2 bytes + chunk */
			uint32_t base = frame_len(p, i, n, vc, 1u, start, 0) + 4u;
			uint32_t chunk = p->rows - start;

			if (base >= p->mtu) {
				chunk = 0;
			} else if (chunk > p->mtu - base) {
				chunk = p->mtu - base;
			}
			while (chunk > 0 && frame_len(p, i, n, vc, 1u, start, chunk) > p->mtu) {
				chunk--;
			}
			if (chunk == 0) {
				return CATS_ERR_ARG; /* the MTU cannot carry one row */
			}
			if (i == want) {
				set_frame(out, p, i, n, k, 1u, vc, start, chunk);
				return (int32_t)i + 1;
			}
			if (i >= 0xFFFFu) {
				return CATS_ERR_UNSUPPORTED;
			}
			i++;
			start += chunk;
		}
	}
	if (cur_n) {
		if (i == want) {
			set_frame(out, p, i, n, cur_k0, cur_n, cur_ids, 0, p->rows);
		}
		i++;
	}
	return (int32_t)i;
}

/* The fixed point: the number of frames when the header carries that very number. */
static int32_t sg_count(const struct sg_plan *p)
{
	struct sg_frame unused;
	int32_t n = 1;
	int round;

	if (p->n_kept == 0 || p->rows == 0) {
		return 0;
	}
	for (round = 0; round < CATS_SG_PLAN_ROUNDS; round++) {
		int32_t got = sg_pack(p, (uint32_t)n, UINT32_MAX, &unused);

		if (got < 0 || got == n) {
			return got;
		}
		if (got > 0xFFFF) {
			return CATS_ERR_UNSUPPORTED;
		}
		n = got;
	}
	return CATS_ERR_UNSUPPORTED; /* cannot happen: the count is monotone and bounded */
}

static int sg_setup(const struct cats_node *n, size_t mtu, struct sg_plan *p)
{
	const struct cats_exchange *ex;
	int e;

	if (n == NULL || mtu == 0 || mtu > CATS_SG_FRAME_MAX) {
		return CATS_ERR_ARG;
	}
	e = cats_node_current_exchange(n);
	if (e < 0) {
		return CATS_ERR_STATE;
	}
	ex = cats_node_exchange(n, (uint16_t)e);
	if (ex == NULL) {
		return CATS_ERR_STATE;
	}
	p->exchange = (uint32_t)e;
	p->sender = cats_node_id(n);
	p->rows = ex->rows;
	p->mtu = (uint32_t)mtu;
	p->kept = ex->kept;
	/* A node alone has nobody to send to. */
	p->n_kept = cats_node_count(n) > 1 ? ex->n_kept : 0u;
	return CATS_OK;
}

uint32_t cats_sg_partition_tag(const struct cats_node *n)
{
	const uint8_t *h = cats_node_partition_hash(n);

	return (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
}

int cats_sg_frame_count(const struct cats_node *n, size_t mtu)
{
	struct sg_plan p;
	int rc = sg_setup(n, mtu, &p);

	return rc < 0 ? rc : (int)sg_count(&p);
}

int cats_sg_encode(const struct cats_node *n, uint16_t index, size_t mtu, uint8_t *buf,
		   size_t cap, struct cats_sg_stats *st)
{
	cats_ColumnFrame msg = cats_ColumnFrame_init_zero;
	struct sg_plan p;
	struct sg_frame f;
	pb_ostream_t os;
	int32_t count;
	uint32_t j;
	int rc = sg_setup(n, mtu, &p);

	if (rc < 0) {
		return rc;
	}
	if (buf == NULL) {
		return CATS_ERR_ARG;
	}
	count = sg_count(&p);
	if (count < 0) {
		return (int)count;
	}
	if ((int32_t)index >= count || sg_pack(&p, (uint32_t)count, index, &f) != index + 1) {
		return CATS_ERR_ARG;
	}
	if (f.nk > CATS_SG_MAX_COLUMNS || f.nk * f.row_count > sizeof(msg.payload.bytes)) {
		return CATS_ERR_UNSUPPORTED; /* cannot happen for mtu <= CATS_SG_FRAME_MAX */
	}
	msg.inference_id = cats_node_inference(n) & CATS_SG_INFERENCE_MASK;
	msg.exchange = p.exchange;
	msg.sender = p.sender;
	msg.fragment = index;
	msg.fragments = (uint32_t)count;
	msg.partition_tag = cats_sg_partition_tag(n);
	msg.row_start = f.row_start;
	msg.row_count = f.row_count;
	msg.column_ids_count = (pb_size_t)f.nk;
	for (j = 0; j < f.nk; j++) {
		msg.column_ids[j] = p.kept[f.k0 + j];
		rc = cats_node_outgoing(n, (uint16_t)(f.k0 + j), (uint16_t)f.row_start,
					(uint16_t)f.row_count,
					(int8_t *)&msg.payload.bytes[j * f.row_count]);
		if (rc < 0) {
			return rc;
		}
	}
	msg.payload.size = (pb_size_t)(f.nk * f.row_count);
	os = pb_ostream_from_buffer(buf, cap < mtu ? cap : mtu);
	if (!pb_encode(&os, cats_ColumnFrame_fields, &msg)) {
		return CATS_ERR_ARG; /* buf too small */
	}
	if (os.bytes_written > f.len) {
		return CATS_ERR_UNSUPPORTED; /* cannot happen: the plan budgets the worst case */
	}
	if (st) {
		st->frames_sent++;
	}
	return (int)os.bytes_written;
}

static int reject(uint32_t *counter, int status)
{
	(*counter)++;
	return status;
}

/* Slot of `col` in the sorted held list, or -1. */
static int held_slot(const struct cats_exchange *ex, uint32_t col)
{
	uint32_t lo = 0, hi = ex->n_held;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2u;

		if (ex->held[mid] < col) {
			lo = mid + 1u;
		} else {
			hi = mid;
		}
	}
	return lo < ex->n_held && ex->held[lo] == col ? (int)lo : -1;
}

int cats_sg_receive(struct cats_node *n, const uint8_t *frame, size_t len,
		    struct cats_sg_stats *st)
{
	cats_ColumnFrame msg = cats_ColumnFrame_init_zero;
	struct cats_sg_stats dummy;
	const struct cats_exchange *ex;
	pb_istream_t is;
	uint32_t j, ncols, self;
	int cur;

	if (st == NULL) {
		memset(&dummy, 0, sizeof(dummy));
		st = &dummy;
	}
	if (n == NULL) {
		return CATS_ERR_ARG;
	}
	/* 1. malformed: does not decode or is not a consistent frame of this partition */
	if (frame == NULL || len == 0 || len > CATS_SG_FRAME_MAX) {
		return reject(&st->rejected_malformed, CATS_ERR_ARG);
	}
	is = pb_istream_from_buffer(frame, len);
	if (!pb_decode(&is, cats_ColumnFrame_fields, &msg)) {
		return reject(&st->rejected_malformed, CATS_ERR_ARG);
	}
	ncols = msg.column_ids_count;
	if (ncols == 0 || msg.row_count == 0 ||
	    (uint64_t)msg.payload.size != (uint64_t)ncols * msg.row_count ||
	    msg.fragment >= msg.fragments || msg.exchange >= cats_node_exchanges(n)) {
		return reject(&st->rejected_malformed, CATS_ERR_ARG);
	}
	ex = cats_node_exchange(n, (uint16_t)msg.exchange);
	if (ex == NULL || (uint64_t)msg.row_start + msg.row_count > ex->rows) {
		return reject(&st->rejected_malformed, CATS_ERR_ARG);
	}
	/* 2. another partition */
	if (msg.partition_tag != cats_sg_partition_tag(n)) {
		return reject(&st->rejected_partition, CATS_ERR_STATE);
	}
	/* 3. sender */
	self = cats_node_id(n);
	if (msg.sender >= cats_node_count(n)) {
		return reject(&st->rejected_sender, CATS_ERR_ARG);
	}
	if (msg.sender == self) {
		return reject(&st->rejected_self, CATS_ERR_ARG);
	}
	/* 4. inference and exchange */
	cur = cats_node_current_exchange(n);
	if (msg.inference_id != (cats_node_inference(n) & CATS_SG_INFERENCE_MASK) || cur < 0 ||
	    msg.exchange < (uint32_t)cur) {
		return reject(&st->rejected_stale, CATS_ERR_STATE);
	}
	if (msg.exchange > (uint32_t)cur) {
		return reject(&st->rejected_future, CATS_ERR_STATE);
	}
	/* 5. every column owned by the sender and in its kept set (= held by us, not ours) */
	for (j = 0; j < ncols; j++) {
		uint16_t c = msg.column_ids[j];

		if (cats_node_owner(n, ex->space, c) != (int)msg.sender || held_slot(ex, c) < 0) {
			return reject(&st->rejected_column, CATS_ERR_COLUMN);
		}
	}
	/* 6. store what is not complete yet */
	st->frames_received++;
	for (j = 0; j < ncols; j++) {
		uint16_t c = msg.column_ids[j];
		int rc;

		if (cats_node_has(n, c)) {
			st->duplicates++;
			continue;
		}
		rc = cats_node_put(n, (uint16_t)msg.exchange, (uint16_t)msg.sender, c,
				   (uint16_t)msg.row_start, (uint16_t)msg.row_count,
				   (const int8_t *)&msg.payload.bytes[j * msg.row_count]);
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
