/*
 * The node executor: one node's side of the partitioned transformer, exchange by exchange,
 * bit-exact with tools/cats/quant/qref.py (Node.begin / send / receive / compute).
 *
 * Static memory plan (everything in the caller's arena, sized from the manifest at init):
 *   persistent: the node object, exchange table, per-block weight bindings, column tables;
 *   activations: x (tokens x own model columns, the residual stream), y (own outputs), the
 *   receive buffer of the current exchange (rows x held, row-major) with per-slot row
 *   tracking, and one scratch area reused by every layer (q|k|v for attention, otherwise the
 *   layer output before the residual add), plus attention-row and matmul scratch.
 * Only one exchange is open at a time, so one receive buffer sized for the largest exchange
 * serves all of them. With the paper input/output blocks the scratch also carries the own
 * input columns into exchange 0 and each MLP's hidden units; the residual term of the input
 * block waits in x, that of the output block in y. The node's own columns live in that buffer
 * too (they are contiguous in the sorted held list), which is also what it broadcasts:
 * nothing is staged twice.
 */
#include <string.h>

#include "cats/cats_kernels.h"
#include "node_internal.h"
#include "sha256.h"

const char *cats_strerror(int status)
{
	switch (status) {
	case CATS_OK: return "ok";
	case CATS_ERR_ARG: return "bad argument";
	case CATS_ERR_MANIFEST: return "manifest does not decode or is inconsistent";
	case CATS_ERR_BLOB: return "blob size does not match the manifest";
	case CATS_ERR_ARENA: return "arena too small";
	case CATS_ERR_UNSUPPORTED: return "beyond this build's limits";
	case CATS_ERR_COLUMN: return "column not expected from that sender";
	case CATS_ERR_STATE: return "wrong exchange or state";
	case CATS_ERR_VERSION: return "unsupported manifest format version";
	case CATS_ERR_HASH: return "blob sha256 does not match the manifest";
	case CATS_ERR_TENSOR: return "tensor table or tensor values invalid";
	default: return "unknown error";
	}
}

static size_t align8(size_t v)
{
	return (v + 7u) & ~(size_t)7u;
}

/* Entries of the column -> slot table: the widest space any exchange holds columns of. */
static size_t slot_width(const struct cats_model_shape *s)
{
	size_t w = 0;

	for (uint8_t sp = CATS_SPACE_MODEL; sp < CATS_SPACES; sp++) {
		const size_t v = cats_space_width(s, sp);

		w = v > w ? v : w;
	}
	return w;
}

/* The memory plan: a pure function of the manifest (the host and the M4 differ only in the
 * sizes of the pointer-holding tables). */
static void plan_memory(const struct cats_manifest_info *info, struct cats_plan *p)
{
	const struct cats_model_shape *s = &info->shape;
	const size_t n = s->tokens;
	const size_t own_m = cats_own_width(info->own[CATS_SPACE_MODEL]);
	const size_t own_h = cats_own_width(info->own[CATS_SPACE_HIDDEN]);
	const size_t own_o = cats_own_width(info->own[CATS_SPACE_OUTPUT]);
	/* Paper blocks (0 otherwise): own input columns, own hidden units of the two io MLPs. */
	const size_t io_w[3] = {cats_own_width(info->own[CATS_SPACE_INPUT]),
				cats_own_width(info->own[CATS_SPACE_IN_HIDDEN]),
				cats_own_width(info->own[CATS_SPACE_HEAD_HIDDEN])};
	/* Scratch: q, k, v of the own heads (the attention output overwrites q); the other layers
	 * need one layer output (n x own_m, n x own_h, n x io_w[0..1], own_o or io_w[2]) before
	 * the residual add / activation. */
	size_t scratch = 3u * n * own_m;
	const size_t max_in = info->max_held > s->patch ? info->max_held : s->patch;
	size_t max_out = own_m > own_h ? own_m : own_h; /* outputs of any one matmul */
	size_t off = 0;

	if (n * own_h > scratch) {
		scratch = n * own_h;
	}
	if (own_o > max_out) {
		max_out = own_o;
	}
	for (int i = 0; i < 3; i++) {
		const size_t rows = i < 2 ? n : 1u; /* the head's hidden units: one row */

		scratch = rows * io_w[i] > scratch ? rows * io_w[i] : scratch;
		max_out = io_w[i] > max_out ? io_w[i] : max_out;
	}
	if (s->io == CATS_IO_PAPER && own_o > scratch) { /* the head's MLP output */
		scratch = own_o;
	}
	p->node = off, off += align8(sizeof(struct cats_node));
	p->ex = off, off += align8(info->n_ex * sizeof(struct cats_exchange));
	p->blocks = off, off += align8(s->blocks * sizeof(struct cats_block));
	p->cols = off, off += align8(info->cols_total * sizeof(uint16_t));
	p->sg = off, off += align8(sizeof(struct cats_sg_cache));
	p->slot_of = off, off += align8(slot_width(s) * sizeof(int16_t));
	p->x = off, off += align8(n * own_m);
	p->y = off, off += align8(own_o);
	p->buf = off, off += align8(info->max_buf);
	p->rowbits = off, off += align8((info->max_buf + 7u) / 8u);
	p->rowcnt = off, off += align8(info->max_held * sizeof(uint16_t));
	p->present = off, off += align8(info->max_held);
	p->scratch = off, off += align8(scratch);
	p->logits = off, off += align8(n * sizeof(int64_t));
	p->probs = off, off += align8(n);
	p->mm = off, off += align8(CATS_MATMUL_SCRATCH_BYTES(max_in, max_out));
	p->total = off;
}

size_t cats_node_arena_needed(const uint8_t *manifest, size_t manifest_len)
{
	struct cats_manifest_info info;
	struct cats_plan plan;

	if (cats_manifest_measure(manifest, manifest_len, &info) != CATS_OK) {
		return 0;
	}
	plan_memory(&info, &plan);
	return plan.total;
}

int cats_node_init(struct cats_node **out, const uint8_t *manifest, size_t manifest_len,
		   const uint8_t *blob, size_t blob_len, uint8_t *arena, size_t arena_size,
		   size_t *needed)
{
	const uint16_t endian = 1;
	struct cats_manifest_info info;
	struct cats_plan p;
	uint8_t digest[CATS_SHA256_BYTES];
	int rc;

	if (out == NULL || manifest == NULL || blob == NULL || arena == NULL) {
		return CATS_ERR_ARG;
	}
	*out = NULL;
	/* Tensors are read in place as little-endian int32: the blob must be word aligned. */
	if (((uintptr_t)blob & 3u) != 0) {
		return CATS_ERR_ARG;
	}
	if (*(const uint8_t *)&endian != 1) {
		return CATS_ERR_UNSUPPORTED;
	}
	rc = cats_manifest_measure(manifest, manifest_len, &info);
	if (rc != CATS_OK) {
		return rc;
	}
	plan_memory(&info, &p);
	const size_t pad = (size_t)((8u - ((uintptr_t)arena & 7u)) & 7u);

	if (needed != NULL) {
		*needed = p.total + pad;
	}
	if (arena_size < pad || arena_size - pad < p.total) {
		return CATS_ERR_ARENA;
	}
	if (blob_len != info.blob_size) {
		return CATS_ERR_BLOB;
	}
	cats_sha256(blob, blob_len, digest);
	if (memcmp(digest, info.blob_sha256, CATS_SHA256_BYTES) != 0) {
		return CATS_ERR_HASH;
	}

	uint8_t *base = arena + pad;
	struct cats_node *n = (struct cats_node *)(void *)(base + p.node);

	memset(base, 0, p.total);
	n->shape = info.shape;
	n->id = info.id;
	n->nodes = info.nodes;
	n->n_ex = info.n_ex;
	memcpy(n->own, info.own, sizeof(n->own));
	memcpy(n->partition_hash, info.partition_hash, CATS_HASH_BYTES);
	n->ex = (struct cats_exchange *)(void *)(base + p.ex);
	n->blk = (struct cats_block *)(void *)(base + p.blocks);
	n->x = (int8_t *)(base + p.x);
	n->y = (int8_t *)(base + p.y);
	n->buf = (int8_t *)(base + p.buf);
	n->rowbits = base + p.rowbits;
	n->rowcnt = (uint16_t *)(void *)(base + p.rowcnt);
	n->present = base + p.present;
	n->slot_of = (int16_t *)(void *)(base + p.slot_of);
	n->slot_width = (uint16_t)slot_width(&info.shape);
	n->sg = (struct cats_sg_cache *)(void *)(base + p.sg);
	n->scratch = (int8_t *)(base + p.scratch);
	n->logits = (int64_t *)(void *)(base + p.logits);
	n->probs = (int8_t *)(base + p.probs);
	n->mm = base + p.mm;
	n->e = -1;

	rc = cats_manifest_tables(manifest, manifest_len, &info, n,
				  (uint16_t *)(void *)(base + p.cols));
	if (rc == CATS_OK) {
		rc = cats_manifest_bind(manifest, manifest_len, &info, n, blob);
	}
	if (rc != CATS_OK) {
		return rc;
	}
	*out = n;
	return CATS_OK;
}

uint16_t cats_node_id(const struct cats_node *n)
{
	return n->id;
}

uint16_t cats_node_count(const struct cats_node *n)
{
	return n->nodes;
}

uint16_t cats_node_exchanges(const struct cats_node *n)
{
	return n->n_ex;
}

const struct cats_model_shape *cats_node_shape(const struct cats_node *n)
{
	return &n->shape;
}

const uint8_t *cats_node_partition_hash(const struct cats_node *n)
{
	return n->partition_hash;
}

const struct cats_exchange *cats_node_exchange(const struct cats_node *n, uint16_t e)
{
	return e < n->n_ex ? &n->ex[e] : NULL;
}

/* Same split rule as tools/cats/model/partition.py (Plan.build / split_ranges): the manifest only
 * carries this node's own ranges; every other owner follows from the model shape and D. */
int cats_node_owner(const struct cats_node *n, uint8_t space, uint16_t col)
{
	const uint32_t width = cats_space_width(&n->shape, space);

	if (col >= width) {
		return -1;
	}
	if (space == CATS_SPACE_MODEL) {
		return (int)cats_split_owner(n->shape.heads, n->nodes, col / n->shape.head_dim);
	}
	return (int)cats_split_owner(width, n->nodes, col);
}

uint32_t cats_node_inference(const struct cats_node *n)
{
	return n->inference;
}

int cats_node_current_exchange(const struct cats_node *n)
{
	return n->e;
}

/* Open exchange e: clear the receive buffer and its tracking, and place the node's own
 * values (rows x own width, row-major) in their slots; they are complete by definition. */
static void stage(struct cats_node *n, const int8_t *own)
{
	const struct cats_exchange *ex = &n->ex[n->e];
	const size_t width = (size_t)(ex->own_end - ex->own_start);

	memset(n->buf, 0, (size_t)ex->rows * ex->n_held);
	memset(n->rowbits, 0, ((size_t)ex->rows * ex->n_held + 7u) / 8u);
	memset(n->rowcnt, 0, (size_t)ex->n_held * sizeof(uint16_t));
	for (size_t r = 0; r < ex->rows; r++) {
		memcpy(n->buf + r * ex->n_held + ex->own_slot, own + r * width, width);
	}
	for (size_t i = 0; i < width; i++) {
		n->rowcnt[ex->own_slot + i] = ex->rows;
	}
	n->n_complete = (uint16_t)width;
	/* The direct column -> slot table of this exchange (all -1, then the held columns). */
	memset(n->slot_of, 0xFF, (size_t)n->slot_width * sizeof(int16_t));
	for (uint16_t i = 0; i < ex->n_held; i++) {
		if (ex->held[i] < n->slot_width) {
			n->slot_of[ex->held[i]] = (int16_t)i;
		}
	}
}

/* The layer that sees the input tokens (lean: embed; paper: the residual inr) into the own
 * model columns: its bias carries the position embedding, so it is per token (tokens x own_m). */
static void linear_tokens(struct cats_node *n, const int8_t *x, int in, const struct cats_lin *l,
			  int8_t *y)
{
	const int own_m = cats_own_width(n->own[CATS_SPACE_MODEL]);

	for (int r = 0; r < n->shape.tokens; r++) {
		cats_matmul_s8(x + (size_t)r * in, 1, in, l->w, own_m, l->bias + (size_t)r * own_m,
			       l->m, l->sh, y + (size_t)r * own_m, n->mm);
	}
}

int cats_node_begin(struct cats_node *n, uint32_t inference_id, const int8_t *input, size_t len)
{
	const struct cats_model_shape *s;

	if (n == NULL || input == NULL) {
		return CATS_ERR_ARG;
	}
	s = &n->shape;
	if (len != (size_t)s->tokens * s->patch) {
		return CATS_ERR_ARG;
	}
	n->inference = inference_id;
	n->done = 0;
	n->e = 0;
	if (s->io == CATS_IO_PAPER) {
		/* The own input columns (patch values and padding flags) are what exchange 0
		 * sends: gather them per token, contiguous as stage() takes them. */
		const uint16_t a = n->own[CATS_SPACE_INPUT][0];
		const size_t w = cats_own_width(n->own[CATS_SPACE_INPUT]);

		for (size_t r = 0; r < s->tokens; r++) {
			memcpy(n->scratch + r * w, input + r * s->patch + a, w);
		}
		stage(n, n->scratch);
		return CATS_OK;
	}
	linear_tokens(n, input, s->patch, &n->embed, n->x); /* local input embedding */
	stage(n, n->x);
	return CATS_OK;
}

int cats_node_outgoing(const struct cats_node *n, uint16_t k, uint16_t row0, uint16_t rows,
		       int8_t *dst)
{
	if (n == NULL || dst == NULL || n->e < 0) {
		return n == NULL || dst == NULL ? CATS_ERR_ARG : CATS_ERR_STATE;
	}
	const struct cats_exchange *ex = &n->ex[n->e];

	if (k >= ex->n_kept || (uint32_t)row0 + rows > ex->rows) {
		return CATS_ERR_ARG;
	}
	const size_t slot = (size_t)ex->own_slot + (ex->kept[k] - ex->own_start);

	for (size_t r = 0; r < rows; r++) {
		dst[r] = n->buf[(row0 + r) * ex->n_held + slot];
	}
	return CATS_OK;
}

/* Held slot of column col in the current exchange, or -1: one look-up in the direct table
 * stage() fills (held columns are unique, so it equals a search of the sorted held list). */
static int find_slot(const struct cats_node *n, uint16_t col)
{
	return col < n->slot_width ? n->slot_of[col] : -1;
}

/* Set bits [first, first + count) of a little-endian bit array: whole bytes at once. */
static void set_bits(uint8_t *bits, size_t first, size_t count)
{
	while (count > 0 && first % 8 != 0) {
		bits[first / 8] |= (uint8_t)(1u << (first % 8));
		first++, count--;
	}
	if (count >= 8) {
		memset(&bits[first / 8], 0xFF, count / 8);
		first += count & ~(size_t)7;
		count %= 8;
	}
	while (count > 0) {
		bits[first / 8] |= (uint8_t)(1u << (first % 8));
		first++, count--;
	}
}

int cats_node_put(struct cats_node *n, uint16_t exchange, uint16_t sender, uint16_t col,
		  uint16_t row0, uint16_t rows, const int8_t *src)
{
	if (n == NULL || src == NULL) {
		return CATS_ERR_ARG;
	}
	if (n->e < 0 || exchange != (uint16_t)n->e) {
		return CATS_ERR_STATE;
	}
	const struct cats_exchange *ex = &n->ex[n->e];
	/* A held column owned by the sender is one of the sender's kept columns; own columns
	 * never come from outside. */
	const int slot = sender < n->nodes && sender != n->id &&
				 cats_node_owner(n, ex->space, col) == (int)sender
			 ? find_slot(n, col)
			 : -1;

	if (slot < 0 || rows == 0 || (uint32_t)row0 + rows > ex->rows) {
		return CATS_ERR_COLUMN;
	}
	/* Locals: int8 stores may alias anything, so the compiler would reload every field. */
	const size_t stride = ex->n_held, total = ex->rows;
	int8_t *dst = n->buf + (size_t)row0 * stride + (size_t)slot;
	uint8_t *bits = n->rowbits;
	size_t bit = (size_t)slot * total + row0;

	if (n->rowcnt[slot] == 0 && rows == total) {
		/* The whole column in one frame, nothing of it here yet (the common case): copy,
		 * mark every row, complete. */
		for (size_t r = 0; r < rows; r++) {
			dst[r * stride] = src[r];
		}
		set_bits(bits, bit, rows);
		n->rowcnt[slot] = (uint16_t)total;
		n->n_complete++;
		return CATS_OK;
	}
	uint16_t cnt = n->rowcnt[slot];

	for (size_t r = 0; r < rows; r++, bit++) {
		dst[r * stride] = src[r];
		if ((bits[bit / 8] & (1u << (bit % 8))) == 0) {
			bits[bit / 8] |= (uint8_t)(1u << (bit % 8));
			cnt++;
		}
	}
	if (cnt == total && n->rowcnt[slot] != total) {
		n->n_complete++;
	}
	n->rowcnt[slot] = cnt;
	return CATS_OK;
}

int cats_node_has(const struct cats_node *n, uint16_t col)
{
	if (n == NULL || n->e < 0) {
		return 0;
	}
	const int slot = find_slot(n, col);

	return slot >= 0 && n->rowcnt[slot] == n->ex[n->e].rows;
}

int cats_node_slot(const struct cats_node *n, uint16_t col)
{
	return n == NULL || n->e < 0 ? -1 : find_slot(n, col);
}

int cats_node_all_present(const struct cats_node *n)
{
	if (n == NULL || n->e < 0) {
		return 1;
	}
	return n->n_complete >= n->ex[n->e].n_held;
}

/* Closes the receive buffer: incomplete columns become zero everywhere (a column missing
 * some rows is as lost as one that never came) and are marked absent for LayerNorm. */
static uint16_t close_buffer(struct cats_node *n, const struct cats_exchange *ex)
{
	uint16_t lost = 0;

	for (size_t i = 0; i < ex->n_held; i++) {
		n->present[i] = n->rowcnt[i] == ex->rows;
		if (!n->present[i]) {
			lost++;
			for (size_t r = 0; r < ex->rows; r++) {
				n->buf[r * ex->n_held + i] = 0;
			}
		}
	}
	return lost;
}

static void linear(struct cats_node *n, const int8_t *x, int rows, int in,
		   const struct cats_lin *l, int out, int8_t *y)
{
	cats_matmul_s8(x, rows, in, l->w, out, l->bias, l->m, l->sh, y, n->mm);
}

/* The exchanges outside the blocks: the head, and the paper input/output blocks
 * (qref.Node.compute: in_x, in_hidden, head_in, head_hidden). */
static int io_compute(struct cats_node *n, const struct cats_exchange *ex)
{
	const int tokens = n->shape.tokens;
	const int held = ex->n_held;
	const int own_m = cats_own_width(n->own[CATS_SPACE_MODEL]);
	const int own_o = cats_own_width(n->own[CATS_SPACE_OUTPUT]);
	const int own_ih = cats_own_width(n->own[CATS_SPACE_IN_HIDDEN]);
	const int own_hh = cats_own_width(n->own[CATS_SPACE_HEAD_HIDDEN]);
	const int paper = n->shape.io == CATS_IO_PAPER;

	switch (ex->kind) {
	case CATS_IN_X: /* MLP hidden units go out next; the residual term waits in x */
		linear_tokens(n, n->buf, held, &n->inr, n->x);
		linear(n, n->buf, tokens, held, &n->in1, own_ih, n->scratch);
		cats_lut_s8(n->in_act, n->scratch, tokens * own_ih, n->scratch);
		n->e++;
		stage(n, n->scratch);
		return CATS_OK;
	case CATS_IN_HIDDEN: /* x0 = residual term + MLP output */
		linear(n, n->buf, tokens, held, &n->in2, own_m, n->scratch);
		cats_add_s8(n->x, n->in_add[0], n->scratch, n->in_add[1], n->in_add[2],
			    tokens * own_m, n->x);
		n->e++;
		stage(n, n->x);
		return CATS_OK;
	case CATS_HEAD_IN:
		if (paper) { /* the residual term, on the un-normalised stream, waits in y */
			linear(n, n->buf, 1, held, &n->headr, own_o, n->y);
		}
		cats_layer_norm_s8(n->buf, 1, held, n->present, n->lnf.m, n->lnf.sh, n->lnf.beta,
				   n->lnf.eps, n->buf);
		if (paper) {
			linear(n, n->buf, 1, held, &n->head1, own_hh, n->scratch);
			cats_lut_s8(n->head_act, n->scratch, own_hh, n->scratch);
			n->e++;
			stage(n, n->scratch);
			return CATS_OK;
		}
		linear(n, n->buf, 1, held, &n->head, own_o, n->y);
		break;
	default: /* CATS_HEAD_HIDDEN: y = residual term + MLP output */
		linear(n, n->buf, 1, held, &n->head, own_o, n->scratch);
		cats_add_s8(n->y, n->head_add[0], n->scratch, n->head_add[1], n->head_add[2],
			    own_o, n->y);
		break;
	}
	n->e = -1;
	n->done = 1;
	return CATS_OK;
}

int cats_node_compute(struct cats_node *n, uint16_t *lost)
{
	if (n == NULL) {
		return CATS_ERR_ARG;
	}
	if (n->e < 0) {
		return CATS_ERR_STATE;
	}
	const struct cats_model_shape *s = &n->shape;
	const struct cats_exchange *ex = &n->ex[n->e];
	const int tokens = s->tokens;
	const int held = ex->n_held;
	const int own_m = cats_own_width(n->own[CATS_SPACE_MODEL]);
	const int own_h = cats_own_width(n->own[CATS_SPACE_HIDDEN]);
	const size_t nm = (size_t)tokens * own_m;
	const uint16_t nlost = close_buffer(n, ex);
	const int8_t *next; /* the own values of the next exchange */

	if (lost != NULL) {
		*lost = nlost;
	}
	if (ex->block < 0) {
		return io_compute(n, ex);
	}
	const struct cats_block *b = &n->blk[ex->block];

	switch (ex->kind) {
	case CATS_ATTN_IN: {
		int8_t *q = n->scratch, *k = q + nm, *v = k + nm;

		cats_layer_norm_s8(n->buf, tokens, held, n->present, b->ln1.m, b->ln1.sh,
				   b->ln1.beta, b->ln1.eps, n->buf);
		linear(n, n->buf, tokens, held, &b->wq, own_m, q);
		linear(n, n->buf, tokens, held, &b->wk, own_m, k);
		linear(n, n->buf, tokens, held, &b->wv, own_m, v);
		cats_attention_s8(q, k, v, tokens, own_m, s->head_dim,
				  s->task == CATS_TASK_FORECAST, b->attn[0], b->attn[1], b->attn[2],
				  b->attn[3], n->logits, n->probs);
		next = q;
		break;
	}
	case CATS_ATTN_OUT:
		linear(n, n->buf, tokens, held, &b->wo, own_m, n->scratch);
		cats_add_s8(n->x, b->add1[0], n->scratch, b->add1[1], b->add1[2], (int)nm, n->x);
		next = n->x;
		break;
	case CATS_FFN_IN:
		cats_layer_norm_s8(n->buf, tokens, held, n->present, b->ln2.m, b->ln2.sh,
				   b->ln2.beta, b->ln2.eps, n->buf);
		linear(n, n->buf, tokens, held, &b->w1, own_h, n->scratch);
		cats_lut_s8(b->act, n->scratch, tokens * own_h, n->scratch);
		next = n->scratch;
		break;
	default: /* CATS_FFN_HIDDEN */
		linear(n, n->buf, tokens, held, &b->w2, own_m, n->scratch);
		cats_add_s8(n->x, b->add2[0], n->scratch, b->add2[1], b->add2[2], (int)nm, n->x);
		next = n->x;
		if (ex->block == s->blocks - 1) { /* the head exchange sends one row */
			if (s->task == CATS_TASK_CLASSIFY) {
				cats_pool_s8(n->x, tokens, own_m, n->pool[0], n->pool[1], n->scratch);
				next = n->scratch;
			} else {
				next = n->x + (size_t)(tokens - 1) * own_m; /* last token */
			}
		}
		break;
	}
	n->e++;
	stage(n, next);
	return CATS_OK;
}

const int8_t *cats_node_output(const struct cats_node *n, uint16_t *start, uint16_t *count)
{
	if (n == NULL || !n->done) {
		return NULL;
	}
	if (start != NULL) {
		*start = n->own[CATS_SPACE_OUTPUT][0];
	}
	if (count != NULL) {
		*count = (uint16_t)cats_own_width(n->own[CATS_SPACE_OUTPUT]);
	}
	return n->y;
}
