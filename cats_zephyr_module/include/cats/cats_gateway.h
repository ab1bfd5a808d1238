/*
 * The gateway role: portable C99, no allocation, no OS calls (time, the air link, the bridge
 * link and logging come through struct cats_gateway_io), so the same code runs in the host
 * simulator (host/cats_gateway_sim.c) and on a board.
 *
 * The gateway knows the partition from any node's manifest (hash, nodes, tokens x patch input,
 * outputs and their split: node d owns outputs split_ranges(outputs, nodes)[d] of
 * tools/cats/model/partition.py, scales). It serves the gateway protocol of proto/cats.proto:
 *
 *  - InferRequest: checked (partition hash unless empty, input size, deadline_ms at most
 *    CATS_GW_DEADLINE_MAX_MS), queued (up to CATS_GW_QUEUE waiting, fair across clients:
 *    struct cats_gateway's queue), then run one at a time: a new inference id (1, 2, ...), the input cut into
 *    InputFrames of at most `mtu` encoded bytes and broadcast (AirType byte + InputFrame);
 *  - OutputFrames from the nodes are collected into the output vector by (sender, start,
 *    offset): a node has responded once its whole slice arrived with status 0;
 *  - the inference ends when every node has responded or is known dead (StationEvent), or at
 *    the deadline (the request's deadline_ms, else config.deadline_ms): the InferResult has the
 *    output (missing slices zero), degraded + missing_nodes + missing_fraction (degraded
 *    whenever a node is missing or any column a node expected did not arrive, from the change
 *    of the nodes' columns_received / columns_lost), a NodeStatus per node,
 *    frames_lost and air_bytes (the SlotEnds of this inference plus the input and output frames
 *    on the air), modelled_latency_s and the output scale;
 *  - StatusRequest: a SwarmStatus at once.
 * Errors (malformed message, wrong hash, wrong input size, queue full, unexpected message) are
 * answered with an InferResult whose status is a negative enum cats_gw_status and whose
 * message says why; the gateway keeps serving.
 *
 * Modelled latency = sum of the SlotEnd airtime_us of the inference + the airtime of its input
 * and output frames (the PHY model of struct cats_gateway_config) + the compute model: max over
 * the nodes that reported counters of NodeCounters.macs * instr_per_mac / cpu_hz.
 *
 * Liveness: a node is alive while its station is connected (StationEvent alive; the medium
 * also reports a hung node, one that sent nothing in its exchange slot, as not alive until it
 * is heard again) or, when no
 * StationEvent said otherwise, if it was heard (any OutputFrame) within liveness_ms.
 * NodeCounters are what the node reports (cumulative since its start, except compute_us and
 * macs: the last inference); link_quality is the share of held columns it received in its
 * last inference, from the change of columns_received / columns_lost.
 */
#ifndef CATS_GATEWAY_H_
#define CATS_GATEWAY_H_

#include <stddef.h>
#include <stdint.h>

#include "cats.pb.h"
#include "cats/cats_auth.h"
#include "cats/cats_port.h"
#include "cats/cats_stream.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CATS_GW_MAX_NODES 16      /* proto/cats.options: InferResult.nodes max_count */
#define CATS_GW_INPUT_MAX 4096    /* InferRequest.input max_size */
#define CATS_GW_OUTPUT_MAX 1024   /* InferResult.output max_size */
#ifndef CATS_GW_QUEUE
#define CATS_GW_QUEUE 4           /* requests waiting behind the running one */
#endif
#define CATS_GW_AIR_MAX 256       /* AirType byte + one frame of the largest link */
#define CATS_GW_NEVER 0xFFFFFFFFu /* NodeStatus.last_seen_ms of a node never heard */
#define CATS_GW_ID_END 0xFFFFFFFFu /* inference ids are 1 .. CATS_GW_ID_END - 1 */

enum cats_gw_status {
	CATS_GW_OK = 0,
	CATS_GW_ERR_MALFORMED = -101,  /* the message does not decode */
	CATS_GW_ERR_HASH = -102,       /* InferRequest.partition_hash is another partition's */
	CATS_GW_ERR_INPUT = -103,      /* input is not tokens x patch bytes */
	CATS_GW_ERR_BUSY = -104,       /* CATS_GW_QUEUE requests already waiting */
	CATS_GW_ERR_UNEXPECTED = -105, /* not a request (a result or status sent to the gateway) */
	CATS_GW_ERR_NO_NODES = -106,   /* no node delivered its output by the deadline */
	CATS_GW_ERR_LINK = -107,       /* broadcasting the input failed */
	CATS_GW_ERR_DEADLINE = -108,   /* InferRequest.deadline_ms above CATS_GW_DEADLINE_MAX_MS */
	CATS_GW_ERR_AUTH = -109,       /* no ClientHello with this run's token yet (simulation) */
	CATS_GW_ERR_IDS = -110,        /* no inference id left that is known unused under the key */
};

#define CATS_GW_DEADLINE_MAX_MS 600000u /* 10 min: deadlines stay far from uint32 wrap */

struct cats_gateway_config {
	size_t mtu;               /* largest InputFrame + MIC per air frame (AirType excluded) */
	/* Authentication of the air frames (cats_auth.h): the swarm key, the MIC length (4 or 8)
	 * and the first inference id. Ids are the nonces' counter: under one key a gateway must
	 * never reuse one, so a restarted gateway starts above every id it used before (the
	 * simulator reserves blocks in a counter file next to the key file, the Zephyr gateway
	 * service in the settings subsystem: CONFIG_CATS_GATEWAY_ID_STORE). 0 means 1. */
	uint8_t key[CATS_AUTH_KEY_LEN];
	uint8_t mic_len;
	uint32_t first_inference;
	/* Ids below inference_limit may be used (the end of the block the application reserved;
	 * 0: up to 0xFFFFFFFE). At the limit the gateway asks io.reserve_ids for more and refuses
	 * requests (CATS_GW_ERR_IDS) while it gets none: an id is never used twice, not even
	 * after 2^32 inferences. */
	uint32_t inference_limit;
	uint32_t deadline_ms;     /* an inference's deadline when the request gives none */
	uint32_t liveness_ms;     /* heard within this window: alive (without StationEvents) */
	float instr_per_mac;      /* compute model: instructions per multiply-accumulate */
	float cpu_hz;             /* compute model: node clock (nRF52840: 64e6) */
	/* The PHY model of the input/output frames (tools/cats/wire/phy.py Phy): an n-byte air
	 * frame (AirType byte + message) puts n + phy_overhead_bytes bytes on the air and takes
	 * (n + phy_framing_bytes) * phy_us_per_byte + phy_extra_us of channel time. */
	uint16_t phy_overhead_bytes;
	uint16_t phy_framing_bytes;
	float phy_us_per_byte;
	float phy_extra_us;
};

/* Defaults: 802.15.4 (mtu 115; 17 overhead = framing bytes, 32 us per byte), deadline 5 s,
 * liveness 10 s, 1.5 instructions per MAC (bench/kernels: M4 DSP path), 64 MHz. */
void cats_gateway_default_config(struct cats_gateway_config *cfg);

struct cats_gateway_io {
	void *ctx;
	uint32_t (*now_ms)(void *ctx); /* monotonic milliseconds */
	/* Broadcast one air frame (AirType byte + message) to the nodes; 0 or < 0. */
	int (*air_send)(void *ctx, const uint8_t *frame, size_t len);
	/* Send one encoded GatewayMessage to bridge client `client`; 0 or < 0. */
	int (*reply)(void *ctx, uint32_t client, const uint8_t *msg, size_t len);
	void (*log)(void *ctx, enum cats_log_level level, const char *msg); /* may be NULL */
	/* May be NULL: persist the reservation of the ids from `next` on (e.g. a new block in
	 * non-volatile storage, so a rebooted gateway starts above them) and set *limit to the
	 * new end; 0, or < 0 when nothing could be reserved. */
	int (*reserve_ids)(void *ctx, uint32_t next, uint32_t *limit);
};

enum cats_gw_node_link { CATS_GW_LINK_UNKNOWN = 0, CATS_GW_LINK_UP = 1, CATS_GW_LINK_DOWN = 2 };

enum cats_gw_answer {
	CATS_GW_WAITING = 0, /* nothing (or part of the slice) yet */
	CATS_GW_DONE = 1,    /* whole slice, status 0 */
	CATS_GW_FAILED = 2,  /* reported a negative status */
};

struct cats_gw_node {
	uint8_t link;          /* enum cats_gw_node_link (StationEvent) */
	uint8_t heard;         /* ever heard */
	uint8_t tag_ok;        /* its partition tag matched ours when last seen */
	uint8_t answer;        /* enum cats_gw_answer, current / last inference */
	uint8_t has_counters;
	uint8_t fresh;         /* counters arrived in this inference */
	int32_t status;        /* the node's last reported status */
	uint32_t last_seen;    /* now_ms() when last heard */
	uint16_t out_start, out_count; /* its output slice */
	uint16_t got;          /* bytes of its slice received in this inference */
	float link_quality;
	cats_NodeCounters counters;      /* last reported */
	cats_NodeCounters prev_counters; /* at the inference before (for link_quality) */
};

struct cats_gw_request {
	uint64_t request_id;
	uint32_t client;
	uint32_t deadline_ms;
	uint8_t used;
	uint32_t seq; /* arrival order */
	uint32_t tag; /* fair-queueing tag: max(vt, the client's newest tag) + 1 */
	uint8_t input[CATS_GW_INPUT_MAX];
};

struct cats_gateway {
	struct cats_gateway_config cfg;
	struct cats_gateway_io io;
	/* the partition */
	uint8_t hash[32];
	uint32_t tag;
	uint16_t nodes, tokens, patch, outputs;
	size_t input_len;
	float input_scale, output_scale;
	struct cats_gw_node node[CATS_GW_MAX_NODES];
	/* requests: queue[q_run] runs when `running`; the others wait. Fair across clients: the
	 * next to run is the smallest tag (start-time fair queueing over the waiting entries), and
	 * a full queue makes room for a client by refusing the newest waiting request of the
	 * client holding the most (when it holds at least two more). */
	struct cats_gw_request queue[CATS_GW_QUEUE + 1];
	uint16_t q_run, q_count;
	uint32_t q_seq, q_vt;
	int running;
	uint32_t next_inference; /* ids 1, 2, ... */
	uint32_t inference_limit; /* ids below it are reserved (cats_gateway_config) */
	uint32_t inference_id;   /* running (or last) inference */
	uint32_t deadline;       /* now_ms() at which the running one ends */
	uint64_t inferences;     /* finished */
	/* air statistics of the running inference */
	uint32_t slot_frames_lost, slot_frames_sent, slot_deliveries, slots;
	uint64_t air_bytes;
	double airtime_us;
	uint32_t frames_ignored; /* stale / foreign / malformed / unauthentic air frames */
	struct cats_auth auth;   /* the gateway is station `nodes` */
	uint32_t auth_rejected_at_start; /* rejections before the running inference */
	int8_t output[CATS_GW_OUTPUT_MAX];
	uint8_t out_have[CATS_GW_OUTPUT_MAX / 8]; /* output units received */
	/* scratch */
	cats_GatewayMessage msg;
	uint8_t air[CATS_GW_AIR_MAX];
	uint8_t enc[CATS_STREAM_MAX_LEN];
	char text[200];
};

/* Read the partition from one node's manifest (NodeManifest bytes) and reset every state.
 * CATS_OK, or CATS_ERR_MANIFEST (does not decode, or sizes beyond this gateway's limits:
 * more than CATS_GW_MAX_NODES nodes, input or output too large) / CATS_ERR_ARG. */
int cats_gateway_init(struct cats_gateway *gw, const struct cats_gateway_config *cfg,
		      const struct cats_gateway_io *io, const uint8_t *manifest, size_t len);

/* From the air link: one AIR frame (AirType byte + message + MIC) from link source station
 * `src`. Authentic OutputFrames are used; others are ignored (rejections are counted in
 * gw->auth.stats). CATS_OK or a negative status (the frame was ignored). */
int cats_gateway_on_air(struct cats_gateway *gw, uint16_t src, const uint8_t *frame,
			size_t len);

/* From the simulation medium: a SlotEnd / a StationEvent (encoded protobuf). */
int cats_gateway_on_slot_end(struct cats_gateway *gw, const uint8_t *msg, size_t len);
int cats_gateway_on_station(struct cats_gateway *gw, const uint8_t *msg, size_t len);

/* From the bridge link: one framed message of stream type `type` from client `client`
 * (only CATS_STREAM_GATEWAY is expected; anything else is answered with an error result). */
int cats_gateway_on_bridge(struct cats_gateway *gw, uint32_t client, uint8_t type,
			   const uint8_t *msg, size_t len);

/* Deadlines: call at least every few ms (or after cats_gateway_next_ms()). */
void cats_gateway_poll(struct cats_gateway *gw);

/* Milliseconds until the running inference's deadline (UINT32_MAX when idle). */
uint32_t cats_gateway_next_ms(const struct cats_gateway *gw);

#ifdef __cplusplus
}
#endif

#endif /* CATS_GATEWAY_H_ */
