/*
 * SomeGather engine: one node's side of every exchange over a broadcast link.
 *
 * Sending: the node's kept columns of the current exchange are packed into ColumnFrames
 * (proto/cats.proto, nanopb) of at most link MTU bytes: whole columns per frame, a column
 * taller than one frame split by rows (row_start/row_count).
 * The rule is the one of tools/cats/artefacts/frames.py (see there and somegather.c); the same kept
 * list, rows and MTU give the same frames, byte for byte, in C and Python.
 * Receiving: frames are decoded, checked (partition tag, inference id, exchange, sender,
 * column ownership and kept set, payload size) and their columns stored into the node's
 * receive buffer by column id. Whatever is still missing at the exchange deadline is zero
 * (cats_node_compute). Everything is counted for the swarm status reports.
 *
 * On the air the inference id is cats_node_inference() modulo 2^16 (CATS_SG_INFERENCE_MASK).
 * The engine keeps no state of its own: the node is the state, stats are the caller's.
 */
#ifndef CATS_SOMEGATHER_H_
#define CATS_SOMEGATHER_H_

#include <stddef.h>
#include <stdint.h>

#include "cats/cats_node.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CATS_SG_FRAME_MAX 255       /* longest frame accepted; largest MTU encoded for */
#define CATS_SG_MAX_COLUMNS 128     /* column ids per frame (proto/cats.options max_count) */
#define CATS_SG_INFERENCE_MASK 0xFFFFu /* inference ids go on the air modulo 2^16 */
#define CATS_SG_PLAN_ROUNDS 16      /* fixed-point rounds of the fragment count */

/* Counters; the order is also tools/cats/artefacts/frames.py Stats (ctypes). */
struct cats_sg_stats {
	uint32_t frames_sent;
	uint32_t frames_received;       /* accepted */
	uint32_t columns_received;      /* complete columns stored */
	uint32_t columns_lost;          /* held columns absent at a deadline */
	uint32_t rejected_malformed;    /* does not decode, sizes/rows/exchange inconsistent */
	uint32_t rejected_partition;    /* another partition's tag */
	uint32_t rejected_sender;       /* sender id >= nodes */
	uint32_t rejected_self;         /* our own id as sender */
	uint32_t rejected_stale;        /* another inference id, or an older exchange (or idle) */
	uint32_t rejected_future;       /* a later exchange than ours (we are behind) */
	uint32_t rejected_column;       /* column not owned by the sender or not in its kept set */
	uint32_t duplicates;            /* columns of an accepted frame already complete */
};

/* The tag every frame carries: the partition hash's first 4 bytes, little endian. */
uint32_t cats_sg_partition_tag(const struct cats_node *n);

/* Number of frames needed to send the current exchange's kept columns within `mtu` bytes
 * (1 .. CATS_SG_FRAME_MAX); 0 for a node alone; a negative cats_status when idle (STATE),
 * for a bad mtu or one that cannot carry a single row (ARG). */
int cats_sg_frame_count(const struct cats_node *n, size_t mtu);

/* Encode frame `index` (0 .. count-1) of the current exchange into buf (at most min(cap, mtu)
 * bytes are written); returns its length or a negative cats_status. Counts frames_sent. */
int cats_sg_encode(const struct cats_node *n, uint16_t index, size_t mtu, uint8_t *buf,
		   size_t cap, struct cats_sg_stats *st);

/* Decode, check and store one received frame. Returns CATS_OK when accepted (columns already
 * complete are skipped and counted as duplicates), otherwise a negative status with the reason
 * counted in *st (st may be NULL): CATS_ERR_ARG malformed/sender/self, CATS_ERR_STATE
 * partition/stale/future, CATS_ERR_COLUMN column. Nothing is stored unless every check
 * passes; never writes outside the node's buffers. */
int cats_sg_receive(struct cats_node *n, const uint8_t *frame, size_t len,
		    struct cats_sg_stats *st);

/* Close the current exchange (cats_node_compute) and add its absent held columns to
 * st->columns_lost (st may be NULL). */
int cats_sg_compute(struct cats_node *n, struct cats_sg_stats *st);

#ifdef __cplusplus
}
#endif

#endif /* CATS_SOMEGATHER_H_ */
