/*
 * The exchange loop of one node over a cats_port link: portable C99, no OS calls (time, radio
 * and log all come through struct cats_port). Used by the Zephyr service (src/zephyr/
 * cats_service.c) and the bare-metal M4 image (cats_zephyr_module/m4/node_main.c).
 *
 * One exchange:
 *  1. frames of this exchange that arrived early (stashed, see below) are fed in first;
 *  2. the node's kept columns go out: cats_sg_frame_count() frames of at most link.mtu bytes
 *     with the MIC, cats_sg_encode() + cats_auth_seal() + link.send() each (with turn_us_per_frame set, after the nodes with
 *     lower ids had their turn, see below);
 *  3. received frames that cats_auth_open() accepts (authentic, from the link source they
 *     claim, not a replay) are fed to cats_sg_receive() until every held column is complete (early
 *     completion: the node never waits when nothing is missing), the link reports the end of
 *     this exchange's slot (recv() == CATS_LINK_SLOT_END, see cats_port.h), or the exchange
 *     deadline (start + exchange_timeout_ms) passes; between empty polls the optional `idle`
 *     hook lets the platform sleep until the link has something (Zephyr: a semaphore);
 *  4. cats_sg_compute(): what is still missing is zero, and the node runs to the next exchange.
 * Slot ends: one for the current exchange of the current inference (ids compared modulo 2^16)
 * closes it; one for an earlier exchange or another inference is ignored; one for a later
 * exchange (the schedule moved on without us) closes the current exchange and every exchange
 * up to that one as soon as its frames are sent. With a scheduled link the deadline is only a
 * last-resort safety net, so which frames count is decided by the link, not by timing.
 * A node that finishes an exchange early broadcasts the next one while slower nodes are still
 * in the previous one; they would reject those frames as "future". The runner keeps up to
 * CATS_RUNNER_STASH such frames and replays them when it reaches their exchange, so a fast
 * neighbour costs no loss (frames beyond the stash are lost and counted as rejected_future).
 */
#ifndef CATS_RUNNER_H_
#define CATS_RUNNER_H_

#include <stddef.h>
#include <stdint.h>

#include "cats/cats_auth.h"
#include "cats/cats_node.h"
#include "cats/cats_port.h"
#include "cats/cats_somegather.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef CATS_RUNNER_STASH
#define CATS_RUNNER_STASH 8 /* early (next-exchange) frames kept; CATS_SG_FRAME_MAX each */
#endif

struct cats_runner {
	struct cats_node *node;
	const struct cats_port *port;
	/* Seals every frame sent and checks every frame received before SomeGather sees it
	 * (cats_auth.h); its stats count the rejections by reason. */
	struct cats_auth *auth;
	uint32_t exchange_timeout_ms;
	/* 0: every node sends its frames at once (a scheduled link, e.g. the simulation medium,
	 * orders them). > 0: ordered turns on a shared half-duplex radio, node 0 first: a node
	 * that transmits hears nothing, so node d sends once nodes 0 .. d-1 are done (every
	 * column of theirs arrived) or their slots of (frames + 1) x this many us passed; the
	 * exchange deadline is then at least (nodes + 1) such slots. */
	uint32_t turn_us_per_frame;
	/* Called when a receive poll found nothing; may sleep up to `max_ms`. NULL: spin. */
	void (*idle)(void *ctx, uint32_t max_ms);
	void *idle_ctx;
	struct cats_sg_stats stats;
	uint32_t exchanges_timed_out; /* exchanges closed by the deadline, not completeness */
	uint32_t exchanges_slot_ended; /* exchanges closed by the link's slot end, incomplete */
	uint32_t stash_dropped;       /* early frames that did not fit the stash */
	int32_t slot_closed;          /* highest exchange of this inference whose slot ended */
	uint16_t n_stash;
	uint16_t stash_len[CATS_RUNNER_STASH];
	uint16_t stash_src[CATS_RUNNER_STASH]; /* their link source (the sender) */
	uint8_t stash[CATS_RUNNER_STASH][CATS_SG_FRAME_MAX];
	uint8_t frame[CATS_SG_FRAME_MAX];
};

void cats_runner_init(struct cats_runner *r, struct cats_node *node,
		      const struct cats_port *port, struct cats_auth *auth,
		      uint32_t exchange_timeout_ms);

/* Run the node's current exchange (steps 1-4 above). CATS_OK or a negative cats_status. */
int cats_runner_exchange(struct cats_runner *r);

/* One whole inference: cats_node_begin() on `input` (tokens x patch int8), then every
 * exchange. The output slice is then cats_node_output(). */
int cats_runner_infer(struct cats_runner *r, uint32_t inference_id, const int8_t *input,
		      size_t len);

/* Multiply-accumulates of one inference on this node (NodeCounters.macs), from its shapes:
 * the input embedding (tokens x patch x own features), per block Q/K/V (3 x tokens x held x
 * own features), attention (2 x own features x token pairs: the lower triangle for the causal
 * forecaster, all pairs for the classifier), output projection, FFN layers 1 and 2 (tokens x
 * held x own units), and the head (held x own outputs, one row). */
uint64_t cats_runner_macs(const struct cats_node *n);

#ifdef __cplusplus
}
#endif

#endif /* CATS_RUNNER_H_ */
