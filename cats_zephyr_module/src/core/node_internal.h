/*
 * Internal to the core: the node object, its weight bindings, the memory plan and the
 * manifest decoder shared by manifest.c and node.c.
 */
#ifndef CATS_NODE_INTERNAL_H_
#define CATS_NODE_INTERNAL_H_

#include <stddef.h>
#include <stdint.h>

#include "cats/cats_node.h"

#define CATS_MAX_BLOCKS ((CATS_MAX_EXCHANGES - 1) / 4)
#define CATS_HASH_BYTES 32

/* A linear layer's tensors in the blob: w (out x in, output-major), bias/m/sh per output. */
struct cats_lin {
	const int8_t *w;
	const int32_t *bias, *m, *sh;
};

/* A partial LayerNorm's tensors: m/sh/beta per held column, eps (copied: one value). */
struct cats_norm {
	const int32_t *m, *sh, *beta;
	int32_t eps;
};

struct cats_block {
	struct cats_norm ln1, ln2;
	struct cats_lin wq, wk, wv, wo, w1, w2;
	const int32_t *attn; /* ml, shl, ma, sha */
	const int32_t *add1, *add2; /* mx, mo, sh */
	const int8_t *act;   /* 256-entry activation table, index x + 128 */
};

/* What the first manifest pass measures: enough to plan memory before anything is stored. */
struct cats_manifest_info {
	struct cats_model_shape shape;
	uint16_t id, nodes;
	uint16_t n_ex;
	uint16_t own[CATS_SPACES][2]; /* [space][start, end), from the manifest's ranges */
	uint8_t ranges_seen;     /* bit per space */
	uint32_t alignment, blob_size;
	uint8_t partition_hash[CATS_HASH_BYTES];
	uint8_t blob_sha256[CATS_HASH_BYTES];
	uint32_t cols_total;     /* sum over exchanges of n_kept + n_held */
	uint32_t max_buf;        /* max over exchanges of rows * n_held */
	uint32_t max_held;
	uint32_t n_tensors;
};

/* The SomeGather frame plan of somegather.c for this node's own frames, computed once per
 * partition and link MTU: the fragment count of every exchange. */
struct cats_sg_cache {
	uint32_t mtu;                        /* 0: not planned yet */
	int32_t count[CATS_MAX_EXCHANGES];   /* frames of exchange e (or a negative cats_status) */
};

/* Byte offsets of every region in the arena (all 8-byte aligned), and the total. */
struct cats_plan {
	size_t node, ex, blocks, cols, sg;       /* persistent tables */
	size_t slot_of;                          /* column -> held slot of the open exchange */
	size_t x, y, buf, rowbits, rowcnt, present, scratch, logits, probs, mm; /* activations */
	size_t total;
};

struct cats_node {
	struct cats_model_shape shape;
	uint16_t id, nodes, n_ex;
	uint16_t own[CATS_SPACES][2]; /* [space][start, end) */
	uint8_t partition_hash[CATS_HASH_BYTES];

	struct cats_exchange *ex; /* n_ex, arena */
	struct cats_block *blk;   /* shape.blocks, arena; pointers into the blob */
	struct cats_lin embed;    /* embed.bias is tokens x own (bias + position) */
	struct cats_norm lnf;
	struct cats_lin head;     /* paper blocks: the output MLP's second layer */
	const int32_t *pool;      /* m, sh (classify only) */
	/* Paper blocks only: input MLP (in1, act, in2) + residual inr (bias tokens x own, with
	 * the position), output MLP (head1, act, head) + residual headr; adds are mx, mo, sh. */
	struct cats_lin in1, in2, inr, head1, headr;
	const int8_t *in_act, *head_act;
	const int32_t *in_add, *head_add;

	/* Activations (arena). */
	int8_t *x;         /* residual stream, own columns: tokens x own_m */
	int8_t *y;         /* own output slice */
	int8_t *buf;       /* receive buffer of the current exchange: rows x n_held */
	uint8_t *rowbits;  /* rows bits per held slot (slot-major): which rows arrived */
	uint16_t *rowcnt;  /* rows arrived per held slot */
	uint8_t *present;  /* compute-time column mask */
	int16_t *slot_of;  /* column -> slot in buf of the open exchange, -1 if not held: a
			    * direct table (slot_width entries) refilled when an exchange opens */
	uint16_t slot_width;
	uint16_t n_complete; /* held slots with every row arrived (own ones included) */
	struct cats_sg_cache *sg; /* frame plan (somegather.c; mutable through a const node) */
	int8_t *scratch;   /* q|k|v, or the layer output before the residual add */
	int64_t *logits;   /* one attention row */
	int8_t *probs;
	void *mm;          /* matmul scratch */

	uint32_t inference;
	int16_t e;         /* current exchange, -1 idle or finished */
	uint8_t done;      /* output valid */
};

/* Width of one of the node's own [start, end) ranges (.own[space] of struct cats_node or
 * struct cats_manifest_info). */
static inline uint32_t cats_own_width(const uint16_t range[2])
{
	return (uint32_t)(range[1] - range[0]);
}

/* The exchange schedule (tools/cats/model/partition.py exchange_schedule): the paper input
 * block's two exchanges, four per block, then the head's (head_in; paper: + head_hidden). */
static inline uint16_t cats_input_exchanges(const struct cats_model_shape *s)
{
	return s->io == CATS_IO_PAPER ? 2u : 0u;
}

static inline uint16_t cats_head_exchange(const struct cats_model_shape *s) /* head_in */
{
	return (uint16_t)(cats_input_exchanges(s) + 4u * s->blocks);
}

static inline uint16_t cats_exchange_count(const struct cats_model_shape *s)
{
	return (uint16_t)(cats_head_exchange(s) + (s->io == CATS_IO_PAPER ? 2u : 1u));
}

/* Split rule of tools/cats/model/partition.py split_ranges: `total` items in `parts` contiguous
 * slices whose sizes differ by at most one, larger slices first. */
void cats_split_range(uint32_t total, uint32_t parts, uint32_t d, uint32_t *start,
		      uint32_t *end);
uint32_t cats_split_owner(uint32_t total, uint32_t parts, uint32_t i);
/* Total width of a space. */
uint32_t cats_space_width(const struct cats_model_shape *s, uint8_t space);

/* Pass 1: decode scalars and measure the tables; validates the model shape, node id and the
 * own ranges against the split rule. */
int cats_manifest_measure(const uint8_t *man, size_t len, struct cats_manifest_info *info);
/* Pass 2: decode the exchanges into n->ex, their column lists into cols (info->cols_total
 * entries), and validate them against the exchange schedule. */
int cats_manifest_tables(const uint8_t *man, size_t len, const struct cats_manifest_info *info,
			 struct cats_node *n, uint16_t *cols);
/* Pass 3: verify every tensor against this node's dimensions and bind it in place. */
int cats_manifest_bind(const uint8_t *man, size_t len, const struct cats_manifest_info *info,
		       struct cats_node *n, const uint8_t *blob);

#endif /* CATS_NODE_INTERNAL_H_ */
