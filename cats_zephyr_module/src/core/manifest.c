/*
 * NodeManifest decoding (proto/cats.proto + proto/cats.options, nanopb) and verification.
 *
 * The manifest is decoded three times from the same bytes, each pass storing only what it
 * can place without any unbounded buffer:
 *   1. measure - scalars, model shape, own ranges, and the sizes of the column tables, so the
 *                memory plan is known before anything is stored;
 *   2. tables  - exchanges, their kept/held column lists written straight into uint16 tables
 *                carved from the arena, checked against the exchange schedule;
 *   3. bind    - every TensorRef checked (name, dtype, shape for this node's dimensions,
 *                alignment, bounds) and bound in place: weights stay in the blob (flash).
 * Separate passes also make the result independent of field order in the encoding.
 * A manifest is a few kB, so decoding it three times at boot costs next to nothing.
 */
#include <string.h>

#include <pb_decode.h>

#include "cats.pb.h"
#include "node_internal.h"

/* ------------------------------------------------------------------------------------------ */
/* Partition rules (tools/cats/model/partition.py)                                            */
/* ------------------------------------------------------------------------------------------ */

void cats_split_range(uint32_t total, uint32_t parts, uint32_t d, uint32_t *start, uint32_t *end)
{
	const uint32_t base = total / parts, extra = total % parts;

	*start = d * base + (d < extra ? d : extra);
	*end = *start + base + (d < extra ? 1u : 0u);
}

uint32_t cats_split_owner(uint32_t total, uint32_t parts, uint32_t i)
{
	const uint32_t base = total / parts, extra = total % parts;
	const uint32_t big = extra * (base + 1u); /* items in the larger (first) slices */

	/* i >= big implies total > big, hence base >= 1. */
	return i < big ? i / (base + 1u) : extra + (i - big) / base;
}

uint32_t cats_space_width(const struct cats_model_shape *s, uint8_t space)
{
	switch (space) {
	case CATS_SPACE_MODEL:
		return s->features;
	case CATS_SPACE_HIDDEN:
		return s->ffn;
	case CATS_SPACE_OUTPUT:
		return s->outputs;
	case CATS_SPACE_INPUT:
		return s->io == CATS_IO_PAPER ? s->patch : 0u;
	case CATS_SPACE_IN_HIDDEN:
	case CATS_SPACE_HEAD_HIDDEN:
		return s->io_hidden; /* 0 with lean blocks */
	default:
		return 0;
	}
}

/* Own range of node d in `space`: heads are split (Plan.build), the model space follows the
 * heads; hidden units and outputs are split directly. */
static void own_range(const struct cats_model_shape *s, uint32_t nodes, uint32_t d, uint8_t space,
		      uint32_t *a, uint32_t *b)
{
	if (space == CATS_SPACE_MODEL) {
		cats_split_range(s->heads, nodes, d, a, b);
		*a *= s->head_dim;
		*b *= s->head_dim;
	} else {
		cats_split_range(cats_space_width(s, space), nodes, d, a, b);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Pass 1: measure                                                                             */
/* ------------------------------------------------------------------------------------------ */

struct measure_ctx {
	struct cats_manifest_info *info;
	int status;
};

static bool fail(int *status, int code)
{
	if (*status == CATS_OK) {
		*status = code;
	}
	return false;
}

static bool count_cols(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
	uint32_t *count = *arg;

	(void)field;
	while (stream->bytes_left != 0) {
		uint32_t v;

		if (!pb_decode_varint32(stream, &v) || v > UINT16_MAX || ++*count > UINT16_MAX) {
			return false;
		}
	}
	return true;
}

static bool measure_range(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
	struct measure_ctx *c = *arg;
	cats_Range r = cats_Range_init_zero;
	unsigned space;

	(void)field;
	if (!pb_decode(stream, cats_Range_fields, &r)) {
		return false;
	}
	space = (unsigned)r.space;
	if (space < CATS_SPACE_MODEL || space >= CATS_SPACES || r.start > r.end ||
	    r.end > UINT16_MAX || (c->info->ranges_seen & (1u << space)) != 0) {
		return fail(&c->status, CATS_ERR_MANIFEST);
	}
	c->info->ranges_seen |= (uint8_t)(1u << space);
	c->info->own[space][0] = (uint16_t)r.start;
	c->info->own[space][1] = (uint16_t)r.end;
	return true;
}

static bool measure_exchange(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
	struct measure_ctx *c = *arg;
	struct cats_manifest_info *info = c->info;
	cats_ExchangeSpec spec = cats_ExchangeSpec_init_zero;
	uint32_t kept = 0, held = 0;

	(void)field;
	spec.kept_cols.funcs.decode = count_cols;
	spec.kept_cols.arg = &kept;
	spec.held_cols.funcs.decode = count_cols;
	spec.held_cols.arg = &held;
	if (!pb_decode(stream, cats_ExchangeSpec_fields, &spec)) {
		return false;
	}
	if (info->n_ex >= CATS_MAX_EXCHANGES) {
		return fail(&c->status, CATS_ERR_UNSUPPORTED);
	}
	if (spec.rows > UINT16_MAX) {
		return fail(&c->status, CATS_ERR_MANIFEST);
	}
	info->n_ex++;
	info->cols_total += kept + held;
	if (spec.rows * held > info->max_buf) {
		info->max_buf = spec.rows * held;
	}
	if (held > info->max_held) {
		info->max_held = held;
	}
	return true;
}

static bool count_tensor(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
	struct measure_ctx *c = *arg;
	cats_TensorRef t = cats_TensorRef_init_zero;

	(void)field;
	if (!pb_decode(stream, cats_TensorRef_fields, &t)) {
		return false;
	}
	if (++c->info->n_tensors > CATS_MAX_TENSORS) {
		return fail(&c->status, CATS_ERR_UNSUPPORTED);
	}
	return true;
}

static int check_shape(const cats_ModelShape *m, struct cats_model_shape *s)
{
	if ((m->task != cats_Task_TASK_FORECAST && m->task != cats_Task_TASK_CLASSIFY) ||
	    m->features == 0 || m->heads == 0 || m->blocks == 0 || m->ffn == 0 || m->patch == 0 ||
	    m->context == 0 || m->features % m->heads != 0 || m->context % m->patch != 0) {
		return CATS_ERR_MANIFEST;
	}
	const uint32_t outputs = m->task == cats_Task_TASK_FORECAST ? m->horizon : m->n_classes;
	const uint32_t tokens = m->context / m->patch;
	const int paper = m->io == cats_IoBlocks_IO_PAPER;
	/* Paper blocks: a token's input is its patch and its padding flags. */
	const uint32_t in_width = paper ? 2u * m->patch : m->patch;

	if (outputs == 0 || (m->io != cats_IoBlocks_IO_LEAN && !paper) ||
	    (paper ? m->io_hidden == 0 : m->io_hidden != 0)) {
		return CATS_ERR_MANIFEST;
	}
	if (m->blocks > CATS_MAX_BLOCKS || m->features > UINT16_MAX || m->ffn > UINT16_MAX ||
	    outputs > UINT16_MAX || tokens > UINT16_MAX || in_width > UINT16_MAX ||
	    m->io_hidden > UINT16_MAX) {
		return CATS_ERR_UNSUPPORTED;
	}
	s->task = (uint8_t)m->task;
	s->activation = (uint8_t)m->activation;
	s->features = (uint16_t)m->features;
	s->heads = (uint16_t)m->heads;
	s->blocks = (uint16_t)m->blocks;
	s->ffn = (uint16_t)m->ffn;
	s->head_dim = (uint16_t)(m->features / m->heads);
	s->tokens = (uint16_t)tokens;
	s->patch = (uint16_t)in_width;
	s->outputs = (uint16_t)outputs;
	s->io = paper ? CATS_IO_PAPER : CATS_IO_LEAN;
	s->io_hidden = (uint16_t)m->io_hidden;
	return CATS_OK;
}

int cats_manifest_measure(const uint8_t *man, size_t len, struct cats_manifest_info *info)
{
	cats_NodeManifest m = cats_NodeManifest_init_zero;
	struct measure_ctx c = {info, CATS_OK};
	pb_istream_t stream = pb_istream_from_buffer(man, len);
	int rc;

	memset(info, 0, sizeof(*info));
	m.ranges.funcs.decode = measure_range;
	m.ranges.arg = &c;
	m.exchanges.funcs.decode = measure_exchange;
	m.exchanges.arg = &c;
	m.tensors.funcs.decode = count_tensor;
	m.tensors.arg = &c;
	if (man == NULL || !pb_decode(&stream, cats_NodeManifest_fields, &m)) {
		return c.status != CATS_OK ? c.status : CATS_ERR_MANIFEST;
	}
	if (m.format_version != CATS_FORMAT_VERSION) {
		return CATS_ERR_VERSION;
	}
	if (!m.has_model) {
		return CATS_ERR_MANIFEST;
	}
	rc = check_shape(&m.model, &info->shape);
	if (rc != CATS_OK) {
		return rc;
	}
	if (m.nodes == 0 || m.nodes > info->shape.heads || m.node_id >= m.nodes) {
		return CATS_ERR_MANIFEST;
	}
	info->id = (uint16_t)m.node_id;
	info->nodes = (uint16_t)m.nodes;
	/* The own ranges must be the ones the split rule gives this node: owners of other nodes'
	 * columns are derived from the same rule (cats_node_owner). Lean blocks have no range in
	 * the paper blocks' spaces. */
	for (uint8_t sp = CATS_SPACE_MODEL; sp < CATS_SPACES; sp++) {
		const int needed = sp <= CATS_SPACE_OUTPUT || info->shape.io == CATS_IO_PAPER;
		uint32_t a, b;

		if (!needed) {
			if ((info->ranges_seen & (1u << sp)) != 0) {
				return CATS_ERR_MANIFEST;
			}
			continue;
		}
		own_range(&info->shape, m.nodes, m.node_id, sp, &a, &b);
		if ((info->ranges_seen & (1u << sp)) == 0 || info->own[sp][0] != a ||
		    info->own[sp][1] != b) {
			return CATS_ERR_MANIFEST;
		}
	}
	if (m.alignment < 4 || (m.alignment & (m.alignment - 1)) != 0) {
		return CATS_ERR_MANIFEST;
	}
	if (info->n_ex != cats_exchange_count(&info->shape)) {
		return CATS_ERR_MANIFEST;
	}
	info->alignment = m.alignment;
	info->blob_size = m.blob_size;
	memcpy(info->partition_hash, m.partition_hash, CATS_HASH_BYTES);
	memcpy(info->blob_sha256, m.blob_sha256, CATS_HASH_BYTES);
	return CATS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Pass 2: exchange tables                                                                     */
/* ------------------------------------------------------------------------------------------ */

static const char *const kind_names[] = {"attn_in", "attn_out", "ffn_in",    "ffn_hidden",
					 "head_in", "in_x",     "in_hidden", "head_hidden"};

/* Kind, space and block of exchange e in the schedule (partition.exchange_schedule). */
static void schedule(const struct cats_model_shape *s, uint16_t e, uint8_t *kind, uint8_t *space,
		     int32_t *block)
{
	static const uint8_t block_space[4] = {CATS_SPACE_MODEL, CATS_SPACE_MODEL,
					       CATS_SPACE_MODEL, CATS_SPACE_HIDDEN};
	const uint16_t first = cats_input_exchanges(s), head = cats_head_exchange(s);

	if (e < first) { /* paper input block */
		*kind = e == 0 ? CATS_IN_X : CATS_IN_HIDDEN;
		*space = e == 0 ? CATS_SPACE_INPUT : CATS_SPACE_IN_HIDDEN;
		*block = -2;
	} else if (e < head) {
		*kind = (uint8_t)((e - first) % 4u);
		*space = block_space[*kind];
		*block = (int32_t)((e - first) / 4u);
	} else {
		*kind = e == head ? CATS_HEAD_IN : CATS_HEAD_HIDDEN;
		*space = e == head ? CATS_SPACE_MODEL : CATS_SPACE_HEAD_HIDDEN;
		*block = -1;
	}
}

struct tables_ctx {
	const struct cats_manifest_info *info;
	struct cats_node *n;
	uint16_t *cur, *end; /* column table cursor */
	uint16_t e;          /* next exchange */
	int status;
};

struct list_ctx {
	struct tables_ctx *t;
	uint32_t count;
};

static bool store_cols(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
	struct list_ctx *l = *arg;

	(void)field;
	while (stream->bytes_left != 0) {
		uint32_t v;

		/* Pass 1 sized the table from the same bytes; the bound is a second guard. */
		if (!pb_decode_varint32(stream, &v) || v > UINT16_MAX || l->t->cur == l->t->end) {
			return false;
		}
		*l->t->cur++ = (uint16_t)v;
		l->count++;
	}
	return true;
}

static int sorted_within(const uint16_t *c, uint32_t n, uint32_t lo, uint32_t hi)
{
	for (uint32_t i = 0; i < n; i++) {
		if (c[i] < lo || c[i] >= hi || (i > 0 && c[i] <= c[i - 1])) {
			return 0;
		}
	}
	return 1;
}

static bool table_exchange(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
	struct tables_ctx *t = *arg;
	const struct cats_model_shape *s = &t->info->shape;
	cats_ExchangeSpec spec = cats_ExchangeSpec_init_zero;
	pb_istream_t again = *stream; /* a buffer stream: a copy reads the same bytes again */
	struct list_ctx kept = {t, 0}, held = {t, 0};
	const uint16_t *kept_cols = t->cur, *held_cols;

	(void)field;
	if (t->e >= t->info->n_ex) {
		return fail(&t->status, CATS_ERR_MANIFEST);
	}
	/* Kept and held columns each land contiguously, whatever the field order. */
	spec.kept_cols.funcs.decode = store_cols;
	spec.kept_cols.arg = &kept;
	if (!pb_decode(stream, cats_ExchangeSpec_fields, &spec)) {
		return false;
	}
	held_cols = t->cur;
	spec.kept_cols.funcs.decode = NULL;
	spec.held_cols.funcs.decode = store_cols;
	spec.held_cols.arg = &held;
	if (!pb_decode(&again, cats_ExchangeSpec_fields, &spec)) {
		return false;
	}

	const uint16_t e = t->e;
	uint8_t kind, space;
	int32_t block;

	schedule(s, e, &kind, &space, &block);
	const uint32_t rows = block == -1 ? 1u : s->tokens; /* the head sends one row */
	const uint16_t own_a = t->info->own[space][0], own_b = t->info->own[space][1];

	if (spec.index != e || spec.block != block || strcmp(spec.kind, kind_names[kind]) != 0 ||
	    (unsigned)spec.space != space || spec.rows != rows ||
	    !sorted_within(kept_cols, kept.count, own_a, own_b) ||
	    !sorted_within(held_cols, held.count, 0, cats_space_width(s, space))) {
		return fail(&t->status, CATS_ERR_MANIFEST);
	}
	/* Own columns are always held and, the list being sorted, contiguous. */
	uint32_t slot = 0;

	while (slot < held.count && held_cols[slot] < own_a) {
		slot++;
	}
	for (uint32_t i = 0; i < (uint32_t)(own_b - own_a); i++) {
		if (slot + i >= held.count || held_cols[slot + i] != own_a + i) {
			return fail(&t->status, CATS_ERR_MANIFEST);
		}
	}

	struct cats_exchange *x = &t->n->ex[e];

	x->kind = kind;
	x->space = space;
	x->block = (int8_t)block;
	x->rows = (uint16_t)rows;
	x->n_kept = (uint16_t)kept.count;
	x->n_held = (uint16_t)held.count;
	x->own_start = own_a;
	x->own_end = own_b;
	x->own_slot = (uint16_t)slot;
	x->kept = kept_cols;
	x->held = held_cols;
	t->e++;
	return true;
}

int cats_manifest_tables(const uint8_t *man, size_t len, const struct cats_manifest_info *info,
			 struct cats_node *n, uint16_t *cols)
{
	cats_NodeManifest m = cats_NodeManifest_init_zero;
	struct tables_ctx t = {info, n, cols, cols + info->cols_total, 0, CATS_OK};
	pb_istream_t stream = pb_istream_from_buffer(man, len);

	m.exchanges.funcs.decode = table_exchange;
	m.exchanges.arg = &t;
	if (!pb_decode(&stream, cats_NodeManifest_fields, &m)) {
		return t.status != CATS_OK ? t.status : CATS_ERR_MANIFEST;
	}
	return t.e == info->n_ex && t.cur == t.end ? CATS_OK : CATS_ERR_MANIFEST;
}

/* ------------------------------------------------------------------------------------------ */
/* Pass 3: tensors                                                                             */
/* ------------------------------------------------------------------------------------------ */

/* Tensors come in groups named "<group>.<part>" (per block "b<i>.<group>.<part>"), exactly
 * as qref.node_params writes them. Shapes are expressed in these dimensions: */
enum dim {
	DIM_OWN_M, DIM_OWN_H, DIM_OWN_O, DIM_OWN_IH, DIM_OWN_HH, DIM_PATCH, DIM_TOKENS,
	DIM_HELD0, DIM_HELD1, DIM_HELD2, DIM_HELD3, /* held columns of block exchange 0..3 */
	DIM_HELD_IN0, DIM_HELD_IN1,                 /* of the paper input exchanges */
	DIM_HELD_HEAD,                              /* of head_in */
	DIM_HELD_LAST,                              /* of the last exchange: what "head" reads */
};
enum gkind { G_LIN, G_NORM, G_VEC };
enum gio { IO_ANY, IO_LEAN_ONLY, IO_PAPER_ONLY }; /* which input/output blocks have the group */
enum gid {
	/* global */
	G_EMBED, G_LNF, G_HEAD, G_POOL,
	G_IN1, G_IN2, G_INR, G_IN_ACT, G_IN_ADD, G_HEAD1, G_HEADR, G_HEAD_ACT, G_HEAD_ADD,
	/* per block */
	G_LN1, G_LN2, G_WQ, G_WK, G_WV, G_WO, G_W1, G_W2, G_ATTN, G_ADD1, G_ADD2, G_ACT,
	G_COUNT
};
#define N_GLOBAL 13
#define N_PER_BLOCK (G_COUNT - N_GLOBAL)
#define PARTS 4 /* LIN: w bias m sh; NORM: m sh beta eps; VEC: the one tensor */

struct group {
	const char *name;
	uint8_t kind;  /* enum gkind */
	uint8_t out;   /* LIN: output dim */
	uint8_t in;    /* LIN: input dim; NORM: its columns */
	uint8_t dtype; /* VEC */
	uint16_t len;  /* VEC */
	uint8_t io;    /* enum gio */
};

static const struct group groups[G_COUNT] = {
	[G_EMBED] = {"embed", G_LIN, DIM_OWN_M, DIM_PATCH, 0, 0, IO_LEAN_ONLY},
	[G_LNF] = {"lnf", G_NORM, 0, DIM_HELD_HEAD, 0, 0, IO_ANY},
	[G_HEAD] = {"head", G_LIN, DIM_OWN_O, DIM_HELD_LAST, 0, 0, IO_ANY},
	[G_POOL] = {"pool", G_VEC, 0, 0, cats_DType_DTYPE_INT32, 2, IO_ANY},
	[G_IN1] = {"in1", G_LIN, DIM_OWN_IH, DIM_HELD_IN0, 0, 0, IO_PAPER_ONLY},
	[G_IN2] = {"in2", G_LIN, DIM_OWN_M, DIM_HELD_IN1, 0, 0, IO_PAPER_ONLY},
	[G_INR] = {"inr", G_LIN, DIM_OWN_M, DIM_HELD_IN0, 0, 0, IO_PAPER_ONLY},
	[G_IN_ACT] = {"in_act", G_VEC, 0, 0, cats_DType_DTYPE_INT8, 256, IO_PAPER_ONLY},
	[G_IN_ADD] = {"in_add", G_VEC, 0, 0, cats_DType_DTYPE_INT32, 3, IO_PAPER_ONLY},
	[G_HEAD1] = {"head1", G_LIN, DIM_OWN_HH, DIM_HELD_HEAD, 0, 0, IO_PAPER_ONLY},
	[G_HEADR] = {"headr", G_LIN, DIM_OWN_O, DIM_HELD_HEAD, 0, 0, IO_PAPER_ONLY},
	[G_HEAD_ACT] = {"head_act", G_VEC, 0, 0, cats_DType_DTYPE_INT8, 256, IO_PAPER_ONLY},
	[G_HEAD_ADD] = {"head_add", G_VEC, 0, 0, cats_DType_DTYPE_INT32, 3, IO_PAPER_ONLY},
	[G_LN1] = {"ln1", G_NORM, 0, DIM_HELD0, 0, 0, IO_ANY},
	[G_LN2] = {"ln2", G_NORM, 0, DIM_HELD2, 0, 0, IO_ANY},
	[G_WQ] = {"wq", G_LIN, DIM_OWN_M, DIM_HELD0, 0, 0, IO_ANY},
	[G_WK] = {"wk", G_LIN, DIM_OWN_M, DIM_HELD0, 0, 0, IO_ANY},
	[G_WV] = {"wv", G_LIN, DIM_OWN_M, DIM_HELD0, 0, 0, IO_ANY},
	[G_WO] = {"wo", G_LIN, DIM_OWN_M, DIM_HELD1, 0, 0, IO_ANY},
	[G_W1] = {"w1", G_LIN, DIM_OWN_H, DIM_HELD2, 0, 0, IO_ANY},
	[G_W2] = {"w2", G_LIN, DIM_OWN_M, DIM_HELD3, 0, 0, IO_ANY},
	[G_ATTN] = {"attn", G_VEC, 0, 0, cats_DType_DTYPE_INT32, 4, IO_ANY},
	[G_ADD1] = {"add1", G_VEC, 0, 0, cats_DType_DTYPE_INT32, 3, IO_ANY},
	[G_ADD2] = {"add2", G_VEC, 0, 0, cats_DType_DTYPE_INT32, 3, IO_ANY},
	[G_ACT] = {"act", G_VEC, 0, 0, cats_DType_DTYPE_INT8, 256, IO_ANY},
};

static const char *const lin_parts[PARTS] = {"w", "bias", "m", "sh"};
static const char *const norm_parts[PARTS] = {"m", "sh", "beta", "eps"};

#define SEEN_BITS ((N_GLOBAL + CATS_MAX_BLOCKS * N_PER_BLOCK) * PARTS)

struct bind_ctx {
	const struct cats_manifest_info *info;
	struct cats_node *n;
	const uint8_t *blob;
	uint8_t seen[(SEEN_BITS + 7) / 8];
	uint32_t bound;
	int status;
};

static uint32_t dim_value(const struct bind_ctx *c, int block, uint8_t dim)
{
	const struct cats_model_shape *s = &c->info->shape;
	const struct cats_exchange *ex = c->n->ex;

	switch (dim) {
	case DIM_OWN_M:
		return cats_own_width(c->info->own[CATS_SPACE_MODEL]);
	case DIM_OWN_H:
		return cats_own_width(c->info->own[CATS_SPACE_HIDDEN]);
	case DIM_OWN_O:
		return cats_own_width(c->info->own[CATS_SPACE_OUTPUT]);
	case DIM_OWN_IH:
		return cats_own_width(c->info->own[CATS_SPACE_IN_HIDDEN]);
	case DIM_OWN_HH:
		return cats_own_width(c->info->own[CATS_SPACE_HEAD_HIDDEN]);
	case DIM_PATCH:
		return s->patch;
	case DIM_TOKENS:
		return s->tokens;
	case DIM_HELD_IN0:
	case DIM_HELD_IN1: /* only bound with paper blocks: exchanges 0 and 1 exist */
		return ex[dim - DIM_HELD_IN0].n_held;
	case DIM_HELD_HEAD:
		return ex[cats_head_exchange(s)].n_held;
	case DIM_HELD_LAST:
		return ex[c->info->n_ex - 1u].n_held;
	default: /* DIM_HELD0..3 */
		return ex[cats_input_exchanges(s) + 4 * block + (dim - DIM_HELD0)].n_held;
	}
}

/* Split "b<i>.<group>[.<part>]" / "<group>[.<part>]"; returns the group id or -1. */
static int parse_name(const char *name, int *block, int *part)
{
	const char *g = name, *dot;
	size_t glen;

	*block = -1;
	*part = 0;
	if (name[0] == 'b' && name[1] >= '0' && name[1] <= '9') {
		int b = 0;

		for (g = name + 1; *g >= '0' && *g <= '9'; g++) {
			if (g - name > 3) {
				return -1;
			}
			b = 10 * b + (*g - '0');
		}
		if (*g++ != '.') {
			return -1;
		}
		*block = b;
	}
	dot = strchr(g, '.');
	glen = dot != NULL ? (size_t)(dot - g) : strlen(g);
	for (int id = *block < 0 ? 0 : N_GLOBAL; id < (*block < 0 ? N_GLOBAL : G_COUNT); id++) {
		const struct group *gr = &groups[id];

		if (strlen(gr->name) != glen || strncmp(gr->name, g, glen) != 0) {
			continue;
		}
		if (gr->kind == G_VEC) {
			return dot == NULL ? id : -1;
		}
		if (dot == NULL) {
			return -1;
		}
		for (int p = 0; p < PARTS; p++) {
			if (strcmp(dot + 1, gr->kind == G_LIN ? lin_parts[p] : norm_parts[p]) == 0) {
				*part = p;
				return id;
			}
		}
		return -1;
	}
	return -1;
}

static void bind_lin(struct cats_lin *l, int part, const uint8_t *p)
{
	if (part == 0) {
		l->w = (const int8_t *)p;
	} else if (part == 1) {
		l->bias = (const int32_t *)(const void *)p;
	} else if (part == 2) {
		l->m = (const int32_t *)(const void *)p;
	} else {
		l->sh = (const int32_t *)(const void *)p;
	}
}

static void bind_norm(struct cats_norm *l, int part, const uint8_t *p)
{
	if (part == 0) {
		l->m = (const int32_t *)(const void *)p;
	} else if (part == 1) {
		l->sh = (const int32_t *)(const void *)p;
	} else if (part == 2) {
		l->beta = (const int32_t *)(const void *)p;
	} else {
		l->eps = *(const int32_t *)(const void *)p;
	}
}

static void bind(struct cats_node *n, int block, int id, int part, const uint8_t *p)
{
	struct cats_block *b = block >= 0 ? &n->blk[block] : NULL;

	switch (id) {
	case G_EMBED: bind_lin(&n->embed, part, p); break;
	case G_LNF: bind_norm(&n->lnf, part, p); break;
	case G_HEAD: bind_lin(&n->head, part, p); break;
	case G_POOL: n->pool = (const int32_t *)(const void *)p; break;
	case G_IN1: bind_lin(&n->in1, part, p); break;
	case G_IN2: bind_lin(&n->in2, part, p); break;
	case G_INR: bind_lin(&n->inr, part, p); break;
	case G_IN_ACT: n->in_act = (const int8_t *)p; break;
	case G_IN_ADD: n->in_add = (const int32_t *)(const void *)p; break;
	case G_HEAD1: bind_lin(&n->head1, part, p); break;
	case G_HEADR: bind_lin(&n->headr, part, p); break;
	case G_HEAD_ACT: n->head_act = (const int8_t *)p; break;
	case G_HEAD_ADD: n->head_add = (const int32_t *)(const void *)p; break;
	case G_LN1: bind_norm(&b->ln1, part, p); break;
	case G_LN2: bind_norm(&b->ln2, part, p); break;
	case G_WQ: bind_lin(&b->wq, part, p); break;
	case G_WK: bind_lin(&b->wk, part, p); break;
	case G_WV: bind_lin(&b->wv, part, p); break;
	case G_WO: bind_lin(&b->wo, part, p); break;
	case G_W1: bind_lin(&b->w1, part, p); break;
	case G_W2: bind_lin(&b->w2, part, p); break;
	case G_ATTN: b->attn = (const int32_t *)(const void *)p; break;
	case G_ADD1: b->add1 = (const int32_t *)(const void *)p; break;
	case G_ADD2: b->add2 = (const int32_t *)(const void *)p; break;
	default: b->act = (const int8_t *)p; break; /* G_ACT */
	}
}

static bool bind_tensor(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
	struct bind_ctx *c = *arg;
	const struct cats_model_shape *s = &c->info->shape;
	cats_TensorRef t = cats_TensorRef_init_zero;
	int block, part, id;
	uint32_t want[2] = {0, 0}, ndim, dtype;

	(void)field;
	if (!pb_decode(stream, cats_TensorRef_fields, &t)) {
		return false;
	}
	id = parse_name(t.name, &block, &part);
	if (id < 0 || block >= (int)s->blocks || (id == G_POOL && s->task != CATS_TASK_CLASSIFY) ||
	    groups[id].io == (s->io == CATS_IO_PAPER ? IO_LEAN_ONLY : IO_PAPER_ONLY)) {
		return fail(&c->status, CATS_ERR_TENSOR); /* unknown or unexpected tensor */
	}
	const struct group *g = &groups[id];

	if (g->kind == G_VEC) {
		dtype = g->dtype, ndim = 1, want[0] = g->len;
	} else if (g->kind == G_NORM) {
		dtype = cats_DType_DTYPE_INT32, ndim = 1;
		want[0] = part == 3 ? 1u : dim_value(c, block, g->in);
	} else if (part == 0) {
		dtype = cats_DType_DTYPE_INT8, ndim = 2;
		want[0] = dim_value(c, block, g->out), want[1] = dim_value(c, block, g->in);
	} else if (part == 1 && (id == G_EMBED || id == G_INR)) { /* bias + position per token */
		dtype = cats_DType_DTYPE_INT32, ndim = 2;
		want[0] = s->tokens, want[1] = dim_value(c, block, g->out);
	} else {
		dtype = cats_DType_DTYPE_INT32, ndim = 1, want[0] = dim_value(c, block, g->out);
	}

	const uint64_t count = (uint64_t)want[0] * (ndim == 2 ? want[1] : 1u);
	const uint64_t nbytes = count * (dtype == cats_DType_DTYPE_INT8 ? 1u : 4u);
	const unsigned bit = (unsigned)((block < 0 ? id : N_GLOBAL + block * N_PER_BLOCK +
						     (id - N_GLOBAL)) * PARTS + part);

	if ((uint32_t)t.dtype != dtype || t.shape_count != ndim || t.shape[0] != want[0] ||
	    (ndim == 2 && t.shape[1] != want[1]) || t.nbytes != nbytes ||
	    t.offset % c->info->alignment != 0 ||
	    (uint64_t)t.offset + t.nbytes > c->info->blob_size ||
	    (c->seen[bit / 8] & (1u << (bit % 8))) != 0) {
		return fail(&c->status, CATS_ERR_TENSOR);
	}
	c->seen[bit / 8] |= (uint8_t)(1u << (bit % 8));
	c->bound++;
	bind(c->n, block, id, part, c->blob + t.offset);
	return true;
}

static int shifts_ok(const int32_t *sh, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		if (sh[i] < 1 || sh[i] > 62) {
			return 0;
		}
	}
	return 1;
}

/* Values the kernels rely on: every shift in [1, 62] (requant's rounding term and int64
 * range), LayerNorm epsilon >= 0 (so the square root is of a non-negative value). */
static int values_ok(const struct cats_node *n)
{
	const struct cats_model_shape *s = &n->shape;
	const uint32_t own_m = cats_own_width(n->own[CATS_SPACE_MODEL]);
	const uint32_t own_h = cats_own_width(n->own[CATS_SPACE_HIDDEN]);
	const uint32_t own_o = cats_own_width(n->own[CATS_SPACE_OUTPUT]);
	const struct cats_exchange *head = &n->ex[cats_head_exchange(s)];
	int ok = shifts_ok(n->head.sh, own_o) && shifts_ok(n->lnf.sh, head->n_held) &&
		 n->lnf.eps >= 0;

	if (s->io == CATS_IO_PAPER) {
		const uint32_t own_ih = cats_own_width(n->own[CATS_SPACE_IN_HIDDEN]);
		const uint32_t own_hh = cats_own_width(n->own[CATS_SPACE_HEAD_HIDDEN]);

		ok = ok && shifts_ok(n->in1.sh, own_ih) && shifts_ok(n->in2.sh, own_m) &&
		     shifts_ok(n->inr.sh, own_m) && shifts_ok(n->head1.sh, own_hh) &&
		     shifts_ok(n->headr.sh, own_o) && shifts_ok(n->in_add + 2, 1) &&
		     shifts_ok(n->head_add + 2, 1);
	} else {
		ok = ok && shifts_ok(n->embed.sh, own_m);
	}
	if (s->task == CATS_TASK_CLASSIFY) {
		ok = ok && shifts_ok(n->pool + 1, 1);
	}
	for (uint16_t i = 0; ok && i < s->blocks; i++) {
		const struct cats_block *b = &n->blk[i];
		const struct cats_exchange *ex = &n->ex[cats_input_exchanges(s) + 4u * i];

		ok = shifts_ok(b->ln1.sh, ex[0].n_held) && b->ln1.eps >= 0 &&
		     shifts_ok(b->ln2.sh, ex[2].n_held) && b->ln2.eps >= 0 &&
		     shifts_ok(b->wq.sh, own_m) && shifts_ok(b->wk.sh, own_m) &&
		     shifts_ok(b->wv.sh, own_m) && shifts_ok(b->wo.sh, own_m) &&
		     shifts_ok(b->w1.sh, own_h) && shifts_ok(b->w2.sh, own_m) &&
		     shifts_ok(b->attn + 1, 1) && shifts_ok(b->attn + 3, 1) &&
		     shifts_ok(b->add1 + 2, 1) && shifts_ok(b->add2 + 2, 1);
	}
	return ok;
}

int cats_manifest_bind(const uint8_t *man, size_t len, const struct cats_manifest_info *info,
		       struct cats_node *n, const uint8_t *blob)
{
	cats_NodeManifest m = cats_NodeManifest_init_zero;
	struct bind_ctx c;
	pb_istream_t stream = pb_istream_from_buffer(man, len);
	/* lean: embed, lnf, head; paper: lnf, head, in1, in2, inr, head1, headr + 4 vectors */
	const uint32_t io = info->shape.io == CATS_IO_PAPER ? 7u * PARTS + 4u : 3u * PARTS;
	const uint32_t expected = io + (info->shape.task == CATS_TASK_CLASSIFY ? 1u : 0u) +
				  info->shape.blocks * (2u * PARTS + 6u * PARTS + 4u);

	memset(&c, 0, sizeof(c));
	c.info = info;
	c.n = n;
	c.blob = blob;
	m.tensors.funcs.decode = bind_tensor;
	m.tensors.arg = &c;
	if (!pb_decode(&stream, cats_NodeManifest_fields, &m)) {
		return c.status != CATS_OK ? c.status : CATS_ERR_MANIFEST;
	}
	if (c.bound != expected || !values_ok(n)) {
		return CATS_ERR_TENSOR;
	}
	return CATS_OK;
}
