/*
 * One node's partitioned inference: bit-exact with tools/cats/qref.py (class Node).
 *
 * Lifecycle: cats_node_init() once (manifest decoded with nanopb, blob read in place from
 * flash, static memory plan checked against the arena), then per inference
 * cats_node_begin(), and for every exchange e = 0 .. exchanges-1:
 *   cats_node_outgoing()  - the own kept columns to broadcast,
 *   cats_node_put()       - store received column rows (the SomeGather engine calls this),
 *   cats_node_compute()   - close the exchange (absent columns are zero) and run to the next,
 * then cats_node_output(). No dynamic allocation: everything lives in the caller's arena.
 */
#ifndef CATS_NODE_H_
#define CATS_NODE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef CATS_MAX_EXCHANGES
#define CATS_MAX_EXCHANGES 65 /* 4 per block + head: up to 16 blocks */
#endif
#ifndef CATS_MAX_TENSORS
#define CATS_MAX_TENSORS 256
#endif

enum cats_status {
	CATS_OK = 0,
	CATS_ERR_ARG = -1,      /* bad argument, shape or state */
	CATS_ERR_MANIFEST = -2, /* manifest does not decode or is inconsistent */
	CATS_ERR_BLOB = -3,     /* blob size/hash/tensor table mismatch */
	CATS_ERR_ARENA = -4,    /* static memory plan does not fit the arena */
	CATS_ERR_UNSUPPORTED = -5,
	CATS_ERR_COLUMN = -6,   /* column id not expected from that sender in this exchange */
	CATS_ERR_STATE = -7,    /* wrong exchange / inference for the node's current state */
};

enum cats_space { CATS_SPACE_MODEL = 1, CATS_SPACE_HIDDEN = 2, CATS_SPACE_OUTPUT = 3 };

enum cats_kind {
	CATS_ATTN_IN = 0, CATS_ATTN_OUT = 1, CATS_FFN_IN = 2, CATS_FFN_HIDDEN = 3, CATS_HEAD_IN = 4
};

/* One exchange as the node sees it (from ExchangeSpec). Column lists are sorted. */
struct cats_exchange {
	uint8_t kind;   /* enum cats_kind */
	uint8_t space;  /* enum cats_space */
	int8_t block;   /* -1 for the head exchange */
	uint16_t rows;  /* rows per column on the air */
	uint16_t n_kept, n_held;
	const uint16_t *kept; /* own columns this node broadcasts */
	const uint16_t *held; /* receive-buffer slot i holds column held[i] */
};

struct cats_node; /* opaque; storage comes from the arena */

/* Bytes of arena cats_node_init() needs for this manifest (0 if it does not decode). */
size_t cats_node_arena_needed(const uint8_t *manifest, size_t manifest_len);

/* Decode + verify; on CATS_ERR_ARENA *needed (if non-NULL) is set to the required size. */
int cats_node_init(struct cats_node **out, const uint8_t *manifest, size_t manifest_len,
		   const uint8_t *blob, size_t blob_len, uint8_t *arena, size_t arena_size,
		   size_t *needed);

uint16_t cats_node_id(const struct cats_node *n);
uint16_t cats_node_count(const struct cats_node *n);
uint16_t cats_node_exchanges(const struct cats_node *n);
const uint8_t *cats_node_partition_hash(const struct cats_node *n); /* 32 bytes */
const struct cats_exchange *cats_node_exchange(const struct cats_node *n, uint16_t e);
/* Owner of column `col` of `space` (node index), or -1 if out of range. */
int cats_node_owner(const struct cats_node *n, uint8_t space, uint16_t col);

/* Start inference `inference_id` on the broadcast int8 input (tokens x patch, row-major). */
int cats_node_begin(struct cats_node *n, uint32_t inference_id, const int8_t *input,
		    size_t len);
uint32_t cats_node_inference(const struct cats_node *n);
int cats_node_current_exchange(const struct cats_node *n); /* -1 when idle/finished */

/* Value of own kept column kept[k] at row r of the current exchange. Columns are stored
 * row-major internally; this copies `rows` values of column kept[k] starting at row0. */
int cats_node_outgoing(const struct cats_node *n, uint16_t k, uint16_t row0, uint16_t rows,
		       int8_t *dst);

/* Store rows [row0, row0+rows) of column `col` from sender `sender` for the current exchange.
 * Returns CATS_OK, or CATS_ERR_COLUMN / CATS_ERR_STATE without touching the buffer. A column
 * counts as present once all its rows have arrived. */
int cats_node_put(struct cats_node *n, uint16_t sender, uint16_t col, uint16_t row0,
		  uint16_t rows, const int8_t *src);
/* Whether held slot of column `col` is complete in the current exchange (for duplicates). */
int cats_node_has(const struct cats_node *n, uint16_t col);

/* Close the current exchange: columns not complete are zero (and absent from LayerNorm
 * statistics); *lost (if non-NULL) gets how many held columns were absent. */
int cats_node_compute(struct cats_node *n, uint16_t *lost);

/* The node's own output slice (int8) once the last exchange is computed. */
const int8_t *cats_node_output(const struct cats_node *n, uint16_t *start, uint16_t *count);

#ifdef __cplusplus
}
#endif

#endif /* CATS_NODE_H_ */
