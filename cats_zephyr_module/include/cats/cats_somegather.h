/*
 * SomeGather engine: one node's side of every exchange over a broadcast link.
 *
 * Sending: the node's kept columns of the current exchange are packed into ColumnFrames
 * (proto/cats.proto, nanopb) of at most link MTU bytes: whole columns per frame, a column
 * taller than one frame split by rows (row_start/row_count).
 * Receiving: frames are decoded, checked (partition tag, inference id, exchange, sender,
 * column ownership and kept set, payload size) and their columns stored into the node's
 * receive buffer by column id. Whatever is still missing at the exchange deadline is zero
 * (cats_node_compute). Everything is counted for the swarm status reports.
 */
#ifndef CATS_SOMEGATHER_H_
#define CATS_SOMEGATHER_H_

#include <stddef.h>
#include <stdint.h>

#include "cats/cats_node.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cats_sg_stats {
	uint32_t frames_sent;
	uint32_t frames_received;       /* accepted */
	uint32_t columns_received;      /* complete columns stored */
	uint32_t columns_lost;          /* held columns absent at a deadline */
	uint32_t rejected_malformed;    /* does not decode / payload size mismatch */
	uint32_t rejected_partition;    /* another partition's tag */
	uint32_t rejected_stale;        /* older inference or exchange */
	uint32_t rejected_future;       /* a later exchange than ours (we are behind) */
	uint32_t rejected_column;       /* column not owned+kept by the sender, or bad rows */
	uint32_t rejected_self;         /* our own id as sender */
	uint32_t duplicates;            /* column rows already present */
};

/* Number of frames needed to send the current exchange's kept columns within `mtu` bytes. */
int cats_sg_frame_count(const struct cats_node *n, size_t mtu);

/* Encode frame `index` (0 .. count-1) of the current exchange into buf; returns its length
 * or a negative cats_status. */
int cats_sg_encode(const struct cats_node *n, uint16_t index, size_t mtu, uint8_t *buf,
		   size_t cap, struct cats_sg_stats *st);

/* Decode and store one received frame. Returns CATS_OK when stored, otherwise a negative
 * status; the reason is counted in *st. Never writes outside the node's buffers. */
int cats_sg_receive(struct cats_node *n, const uint8_t *frame, size_t len,
		    struct cats_sg_stats *st);

#ifdef __cplusplus
}
#endif

#endif /* CATS_SOMEGATHER_H_ */
