/*
 * SomeGather engine: one node's side of every exchange over a broadcast link.
 *
 * Sending: the node's kept columns of the current exchange are packed into ColumnFrames
 * (format v2, proto/cats.proto) of at most link MTU bytes by the frame plan: whole columns per
 * frame, a column taller than one frame split by rows. A frame carries only inference id,
 * exchange, fragment and payload: the receiver derives the columns and rows from the plan of
 * the sender (the link source) for the same MTU.
 * The rule is the one of tools/cats/artefacts/frames.py (see there and somegather.c); the same kept
 * list, rows and MTU give the same frames, byte for byte, in C and Python.
 * Receiving: frames are decoded, checked (sender, inference id, exchange, fragment and payload
 * size against the sender's plan; the partition is the MIC's AAD) and their columns stored
 * into the node's receive buffer. Whatever is still missing at the exchange deadline is zero
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
#define CATS_SG_INFERENCE_MASK 0xFFFFu /* inference ids go on the air modulo 2^16 */

/* Counters; the order is also tools/cats/artefacts/frames.py Stats (ctypes). */
struct cats_sg_stats {
	uint32_t frames_sent;
	uint32_t frames_received;       /* accepted */
	uint32_t columns_received;      /* complete columns stored */
	uint32_t columns_lost;          /* held columns absent at a deadline */
	uint32_t rejected_malformed;    /* does not decode, no exchange of the partition, fragment
					 * or payload size not of the sender's plan */
	uint32_t rejected_partition;    /* unused since format v2 (the tag is in the MIC's AAD) */
	uint32_t rejected_sender;       /* link source >= nodes */
	uint32_t rejected_self;         /* our own id as the source */
	uint32_t rejected_stale;        /* another inference id, or an older exchange (or idle) */
	uint32_t rejected_future;       /* a later exchange than ours (we are behind) */
	uint32_t rejected_column;       /* unused since format v2 (columns follow from the plan) */
	uint32_t duplicates;            /* columns of an accepted frame already complete */
};

/* The tag every frame carries: the partition hash's first 4 bytes, little endian. */
uint32_t cats_sg_partition_tag(const struct cats_node *n);

/* Number of frames needed to send the current exchange's kept columns within `mtu` bytes
 * (1 .. CATS_SG_FRAME_MAX); 0 for a node alone; a negative cats_status when idle (STATE),
 * for a bad mtu or one that cannot carry a single row (ARG). */
int cats_sg_frame_count(const struct cats_node *n, size_t mtu);

/* Plan the frames of every exchange for `mtu` once (the fragment counts; cats_runner_init
 * calls it with the link MTU); cats_sg_frame_count and cats_sg_encode then use the plan, and
 * plan on first use for another MTU. CATS_OK or CATS_ERR_ARG for a bad mtu. */
int cats_sg_plan(const struct cats_node *n, size_t mtu);

/* Encode frame `index` (0 .. count-1) of the current exchange into buf (at most min(cap, mtu)
 * bytes are written); returns its length or a negative cats_status. Counts frames_sent. */
int cats_sg_encode(const struct cats_node *n, uint16_t index, size_t mtu, uint8_t *buf,
		   size_t cap, struct cats_sg_stats *st);

/* Decode, check and store one received frame from link source `sender` (a node id), sent
 * for a link of `mtu` bytes (the swarm's one; the sender's plan depends on it). Returns CATS_OK
 * when accepted (columns already complete are skipped and counted as duplicates), otherwise a
 * negative status with the reason counted in *st (st may be NULL): CATS_ERR_ARG
 * malformed/sender/self, CATS_ERR_STATE stale/future. Nothing is stored unless every check
 * passes; never writes outside the node's buffers. */
int cats_sg_receive(struct cats_node *n, uint16_t sender, size_t mtu, const uint8_t *frame,
		    size_t len, struct cats_sg_stats *st);

/* Close the current exchange (cats_node_compute) and add its absent held columns to
 * st->columns_lost (st may be NULL). */
int cats_sg_compute(struct cats_node *n, struct cats_sg_stats *st);

#ifdef __cplusplus
}
#endif

#endif /* CATS_SOMEGATHER_H_ */
