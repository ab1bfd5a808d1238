/*
 * One node's partitioned inference: bit-exact with tools/cats/quant/qref.py (class Node).
 *
 * Lifecycle: cats_node_init() once (manifest decoded with nanopb, blob verified and read in
 * place from flash, static memory plan checked against the arena), then per inference
 * cats_node_begin(), and for every exchange e = 0 .. exchanges-1:
 *   cats_node_outgoing()  - the own kept columns to broadcast,
 *   cats_node_put()       - store received column rows (the SomeGather engine calls this),
 *   cats_node_compute()   - close the exchange (absent columns are zero) and run to the next,
 * then cats_node_output(). No dynamic allocation: everything lives in the caller's arena
 * (cats_node_arena_needed() bytes, 8-byte aligned) and the blob, which must stay valid and
 * 4-byte aligned for the node's lifetime (weights are never copied).
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
#define CATS_FORMAT_VERSION 1 /* NodeManifest.format_version this runtime reads */

enum cats_status {
	CATS_OK = 0,
	CATS_ERR_ARG = -1,      /* bad argument, shape or state */
	CATS_ERR_MANIFEST = -2, /* manifest does not decode or is inconsistent */
	CATS_ERR_BLOB = -3,     /* blob size does not match the manifest */
	CATS_ERR_ARENA = -4,    /* static memory plan does not fit the arena */
	CATS_ERR_UNSUPPORTED = -5, /* valid but beyond this build's limits (or big endian) */
	CATS_ERR_COLUMN = -6,   /* column id / rows not expected from that sender in this exchange */
	CATS_ERR_STATE = -7,    /* wrong exchange / inference for the node's current state */
	CATS_ERR_VERSION = -8,  /* manifest format_version is not CATS_FORMAT_VERSION */
	CATS_ERR_HASH = -9,     /* blob sha256 differs from the manifest's blob_sha256 */
	CATS_ERR_TENSOR = -10,  /* tensor missing, unknown, duplicated, wrong dtype/shape/offset,
				 * or holding an invalid requantisation shift / epsilon */
};

/* Short constant description of a cats_status, for logs. */
const char *cats_strerror(int status);

enum cats_space {
	CATS_SPACE_MODEL = 1, CATS_SPACE_HIDDEN = 2, CATS_SPACE_OUTPUT = 3,
	/* paper input/output blocks only (proto Space) */
	CATS_SPACE_INPUT = 4, CATS_SPACE_IN_HIDDEN = 5, CATS_SPACE_HEAD_HIDDEN = 6
};
#define CATS_SPACES 7 /* one past the last space */

enum cats_kind {
	CATS_ATTN_IN = 0, CATS_ATTN_OUT = 1, CATS_FFN_IN = 2, CATS_FFN_HIDDEN = 3, CATS_HEAD_IN = 4,
	/* paper blocks: in_x and in_hidden before the first block, head_hidden after head_in */
	CATS_IN_X = 5, CATS_IN_HIDDEN = 6, CATS_HEAD_HIDDEN = 7
};

/* Input and output blocks (proto IoBlocks). */
enum cats_io { CATS_IO_LEAN = 0, CATS_IO_PAPER = 1 };

enum cats_task { CATS_TASK_FORECAST = 1, CATS_TASK_CLASSIFY = 2 };

/* Model dimensions (from ModelShape), as the node uses them. */
struct cats_model_shape {
	uint8_t task;        /* enum cats_task */
	uint8_t activation;  /* proto Activation (informational: the blob holds the table) */
	uint16_t features, heads, blocks, ffn, head_dim;
	uint16_t tokens;     /* N = context / patch */
	uint16_t patch;      /* input values per token: the patch, with paper blocks also its
			      * padding flags (2 x ModelShape.patch) */
	uint16_t outputs;    /* horizon (forecast) or n_classes (classify) */
	uint16_t io_hidden;  /* width of the paper blocks' MLPs (0 with lean blocks) */
	uint8_t io;          /* enum cats_io */
};

/* One exchange as the node sees it (from ExchangeSpec). Column lists are sorted. */
struct cats_exchange {
	uint8_t kind;   /* enum cats_kind */
	uint8_t space;  /* enum cats_space */
	int8_t block;   /* -1 for the head exchanges, -2 for the paper input block's */
	uint16_t rows;  /* rows per column on the air */
	uint16_t n_kept, n_held;
	uint16_t own_start, own_end; /* this node's columns [start, end) of `space` */
	uint16_t own_slot;           /* held[own_slot] == own_start: own columns are contiguous */
	const uint16_t *kept; /* own columns this node broadcasts */
	const uint16_t *held; /* receive-buffer slot i holds column held[i] */
};

struct cats_node; /* opaque; storage comes from the arena */

/* Bytes of (8-byte aligned) arena cats_node_init() needs for this manifest; 0 if the
 * manifest does not decode. */
size_t cats_node_arena_needed(const uint8_t *manifest, size_t manifest_len);

/* Decode + verify; on CATS_ERR_ARENA *needed (if non-NULL) is set to the required size
 * (including any padding to align `arena`). */
int cats_node_init(struct cats_node **out, const uint8_t *manifest, size_t manifest_len,
		   const uint8_t *blob, size_t blob_len, uint8_t *arena, size_t arena_size,
		   size_t *needed);

uint16_t cats_node_id(const struct cats_node *n);
uint16_t cats_node_count(const struct cats_node *n);
uint16_t cats_node_exchanges(const struct cats_node *n);
const struct cats_model_shape *cats_node_shape(const struct cats_node *n);
const uint8_t *cats_node_partition_hash(const struct cats_node *n); /* 32 bytes */
const struct cats_exchange *cats_node_exchange(const struct cats_node *n, uint16_t e);
/* Owner of column `col` of `space` (node index), or -1 if out of range. */
int cats_node_owner(const struct cats_node *n, uint8_t space, uint16_t col);

/* Start inference `inference_id` on the broadcast int8 input (tokens x patch, row-major). */
int cats_node_begin(struct cats_node *n, uint32_t inference_id, const int8_t *input,
		    size_t len);
uint32_t cats_node_inference(const struct cats_node *n);
int cats_node_current_exchange(const struct cats_node *n); /* -1 when idle/finished */

/* Copy rows [row0, row0+rows) of own kept column kept[k] of the current exchange to dst. */
int cats_node_outgoing(const struct cats_node *n, uint16_t k, uint16_t row0, uint16_t rows,
		       int8_t *dst);

/* Store rows [row0, row0+rows) of column `col`, sent by node `sender` in exchange `exchange`.
 * Accepted only for the current exchange, a column held by this node and owned by `sender`
 * (a sender's kept column; never one of ours). Returns CATS_OK, CATS_ERR_STATE (another
 * exchange, or idle) or CATS_ERR_COLUMN (column, sender or row range), and then the buffer is
 * untouched. Rows that already arrived are overwritten and not counted twice; a column counts
 * as present once all its rows have arrived. */
int cats_node_put(struct cats_node *n, uint16_t exchange, uint16_t sender, uint16_t col,
		  uint16_t row0, uint16_t rows, const int8_t *src);
/* Whether column `col` is complete in the current exchange (own columns always are). */
int cats_node_has(const struct cats_node *n, uint16_t col);
/* Receive-buffer slot of column `col` in the current exchange, -1 if not held (or idle):
 * one look-up in a direct column -> slot table built when the exchange opens. */
int cats_node_slot(const struct cats_node *n, uint16_t col);
/* Whether every held column of the current exchange is complete (1 when idle): a counter,
 * not a scan. */
int cats_node_all_present(const struct cats_node *n);

/* Close the current exchange: columns not complete are zero (and absent from LayerNorm
 * statistics); *lost (if non-NULL) gets how many held columns were absent. */
int cats_node_compute(struct cats_node *n, uint16_t *lost);

/* The node's own output slice (int8) once the last exchange is computed, else NULL. */
const int8_t *cats_node_output(const struct cats_node *n, uint16_t *start, uint16_t *count);

#ifdef __cplusplus
}
#endif

#endif /* CATS_NODE_H_ */
