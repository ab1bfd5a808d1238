/*
 * The gateway role (see include/cats/cats_gateway.h).
 */
#include "cats/cats_gateway.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <pb_decode.h>
#include <pb_encode.h>

#include "cats/cats_node.h"
#include "cats/cats_output.h"
#include "cats/cats_somegather.h"

#define PAYLOAD_MAX 240 /* cats.options: InputFrame.payload / OutputFrame.payload max_size */

static void gw_log(struct cats_gateway *gw, enum cats_log_level level, const char *msg)
{
	if (gw->io.log != NULL) {
		gw->io.log(gw->io.ctx, level, msg);
	}
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void gw_logf(struct cats_gateway *gw, enum cats_log_level level, const char *fmt, ...)
{
	va_list ap;

	if (gw->io.log == NULL) {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(gw->text, sizeof(gw->text), fmt, ap); /* long lines are cut */
	va_end(ap);
	gw->io.log(gw->io.ctx, level, gw->text);
}

#define GW_LOGF gw_logf

void cats_gateway_default_config(struct cats_gateway_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->mtu = 115;           /* 802.15.4: 127 - MHR 9 - FCS 2 - AirType 1 */
	cfg->deadline_ms = 5000;
	cfg->liveness_ms = 10000;
	cfg->instr_per_mac = 1.5f;
	cfg->cpu_hz = 64e6f;
	cfg->phy_overhead_bytes = 17; /* SHR + PHR 6, MHR 9, FCS 2 (cats.wire.phy.IEEE802154) */
	cfg->phy_framing_bytes = 17;
	cfg->phy_us_per_byte = 32.0f;
	cfg->phy_extra_us = 0.0f;
	cfg->mic_len = CATS_AUTH_MIC_DEFAULT;
}

static uint32_t now(const struct cats_gateway *gw)
{
	return gw->io.now_ms(gw->io.ctx);
}

int cats_gateway_init(struct cats_gateway *gw, const struct cats_gateway_config *cfg,
		      const struct cats_gateway_io *io, const uint8_t *manifest, size_t len)
{
	cats_NodeManifest man = cats_NodeManifest_init_zero;
	pb_istream_t is = pb_istream_from_buffer(manifest, len);
	uint32_t base, extra, start = 0;
	const cats_ModelShape *m;

	if (gw == NULL || cfg == NULL || io == NULL || io->now_ms == NULL ||
	    io->air_send == NULL || io->reply == NULL || manifest == NULL) {
		return CATS_ERR_ARG;
	}
	memset(gw, 0, sizeof(*gw));
	gw->cfg = *cfg;
	gw->io = *io;
	if (gw->cfg.mtu > CATS_GW_AIR_MAX - 1) {
		gw->cfg.mtu = CATS_GW_AIR_MAX - 1;
	}
	if (gw->cfg.phy_us_per_byte < 0.0f || gw->cfg.cpu_hz <= 0.0f) {
		return CATS_ERR_ARG;
	}
	if (!pb_decode(&is, cats_NodeManifest_fields, &man) || !man.has_model) {
		gw_log(gw, CATS_LOG_ERR, "gateway: manifest does not decode");
		return CATS_ERR_MANIFEST;
	}
	m = &man.model;
	if (man.format_version != CATS_FORMAT_VERSION) {
		return CATS_ERR_VERSION;
	}
	if (man.nodes < 1 || man.nodes > CATS_GW_MAX_NODES || m->patch == 0 ||
	    m->context < m->patch || m->blocks == 0) {
		GW_LOGF(gw, CATS_LOG_ERR, "gateway: partition of %u nodes, patch %u: unsupported",
			(unsigned)man.nodes, (unsigned)m->patch);
		return CATS_ERR_MANIFEST;
	}
	memcpy(gw->hash, man.partition_hash, sizeof(gw->hash));
	gw->tag = (uint32_t)gw->hash[0] | (uint32_t)gw->hash[1] << 8 |
		  (uint32_t)gw->hash[2] << 16 | (uint32_t)gw->hash[3] << 24;
	gw->nodes = (uint16_t)man.nodes;
	/* Input values per token: with the paper blocks, the patch and its padding flags. */
	gw->patch = (uint16_t)(m->io == cats_IoBlocks_IO_PAPER ? 2u * m->patch : m->patch);
	gw->tokens = (uint16_t)(m->context / m->patch);
	gw->outputs = (uint16_t)(m->task == cats_Task_TASK_CLASSIFY ? m->n_classes : m->horizon);
	gw->input_len = (size_t)gw->tokens * gw->patch;
	gw->input_scale = man.input_scale;
	gw->output_scale = man.output_scale;
	if (gw->input_len > CATS_GW_INPUT_MAX || gw->outputs == 0 ||
	    gw->outputs > CATS_GW_OUTPUT_MAX) {
		GW_LOGF(gw, CATS_LOG_ERR, "gateway: input %u or outputs %u beyond this gateway",
			(unsigned)gw->input_len, (unsigned)gw->outputs);
		return CATS_ERR_MANIFEST;
	}
	/* tools/cats/model/partition.py split_ranges: sizes differ by one, the larger first. */
	base = gw->outputs / gw->nodes;
	extra = gw->outputs % gw->nodes;
	for (uint16_t d = 0; d < gw->nodes; d++) {
		uint32_t size = base + (d < extra ? 1u : 0u);

		gw->node[d].out_start = (uint16_t)start;
		gw->node[d].out_count = (uint16_t)size;
		gw->node[d].link_quality = 1.0f;
		start += size;
	}
	gw->next_inference = cfg->first_inference ? cfg->first_inference : 1u;
	gw->inference_limit = cfg->inference_limit ? cfg->inference_limit : CATS_GW_ID_END;
	if (cats_auth_init(&gw->auth, cfg->key, cfg->mic_len, gw->tag, gw->nodes, gw->nodes) !=
		    CATS_OK ||
	    gw->cfg.mtu <= cfg->mic_len) {
		GW_LOGF(gw, CATS_LOG_ERR, "gateway: MIC length %u or %u nodes not supported",
			(unsigned)cfg->mic_len, (unsigned)gw->nodes);
		return CATS_ERR_ARG;
	}
	GW_LOGF(gw, CATS_LOG_INF,
		"gateway: partition %02x%02x%02x%02x.., %u nodes, input %u x %u, %u outputs",
		gw->hash[0], gw->hash[1], gw->hash[2], gw->hash[3], gw->nodes, gw->tokens,
		gw->patch, gw->outputs);
	return CATS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Replies                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static void send_msg(struct cats_gateway *gw, uint32_t client)
{
	pb_ostream_t os = pb_ostream_from_buffer(gw->enc, sizeof(gw->enc));

	if (!pb_encode(&os, cats_GatewayMessage_fields, &gw->msg)) {
		gw_log(gw, CATS_LOG_ERR, "gateway: reply does not encode");
		return;
	}
	if (gw->io.reply(gw->io.ctx, client, gw->enc, os.bytes_written) < 0) {
		GW_LOGF(gw, CATS_LOG_WRN, "gateway: reply to client %u failed", (unsigned)client);
	}
}

static void reply_error(struct cats_gateway *gw, uint32_t client, uint64_t request_id,
			int status, const char *what)
{
	cats_InferResult *res = &gw->msg.msg.infer_result;

	memset(&gw->msg, 0, sizeof(gw->msg));
	gw->msg.which_msg = cats_GatewayMessage_infer_result_tag;
	res->request_id = request_id;
	res->status = status;
	res->output_scale = gw->output_scale;
	snprintf(res->message, sizeof(res->message), "%s", what); /* `what` may be gw->text */
	GW_LOGF(gw, CATS_LOG_WRN, "gateway: request %llu refused: %s",
		(unsigned long long)request_id, res->message);
	send_msg(gw, client);
}

static int node_alive(const struct cats_gateway *gw, const struct cats_gw_node *n, uint32_t t)
{
	if (n->link == CATS_GW_LINK_UP) {
		return 1;
	}
	if (n->link == CATS_GW_LINK_DOWN) {
		return 0;
	}
	return n->heard && (uint32_t)(t - n->last_seen) < gw->cfg.liveness_ms;
}

static void node_status(const struct cats_gateway *gw, uint16_t d, uint32_t t,
			cats_NodeStatus *st)
{
	const struct cats_gw_node *n = &gw->node[d];

	memset(st, 0, sizeof(*st));
	st->node = d;
	st->alive = node_alive(gw, n, t) != 0;
	st->last_seen_ms = n->heard ? (uint32_t)(t - n->last_seen) : CATS_GW_NEVER;
	st->responded = n->answer == CATS_GW_DONE;
	st->has_counters = n->has_counters != 0;
	st->counters = n->counters;
	st->link_quality = n->link_quality;
	if (n->heard && n->tag_ok) {
		memcpy(st->partition_hash, gw->hash, sizeof(st->partition_hash));
	}
}

static void reply_status(struct cats_gateway *gw, uint32_t client)
{
	cats_SwarmStatus *s = &gw->msg.msg.swarm_status;
	uint32_t t = now(gw);

	memset(&gw->msg, 0, sizeof(gw->msg));
	gw->msg.which_msg = cats_GatewayMessage_swarm_status_tag;
	memcpy(s->partition_hash, gw->hash, sizeof(s->partition_hash));
	s->nodes = gw->nodes;
	s->node_status_count = gw->nodes;
	for (uint16_t d = 0; d < gw->nodes; d++) {
		node_status(gw, d, t, &s->node_status[d]);
	}
	s->tokens = gw->tokens;
	s->patch = gw->patch;
	s->outputs = gw->outputs;
	s->input_scale = gw->input_scale;
	s->output_scale = gw->output_scale;
	s->inferences = gw->inferences;
	send_msg(gw, client);
}

/* ------------------------------------------------------------------------------------------ */
/* Inferences                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* One air frame of `len` bytes (AirType byte + message) of the gateway's own traffic. */
static void count_frame(struct cats_gateway *gw, size_t len)
{
	gw->air_bytes += len + gw->cfg.phy_overhead_bytes;
	gw->airtime_us += (double)(len + gw->cfg.phy_framing_bytes) *
				  (double)gw->cfg.phy_us_per_byte +
			  (double)gw->cfg.phy_extra_us;
}

static size_t varint_len(uint32_t v)
{
	size_t n = 1;

	while (v >= 0x80u) {
		v >>= 7;
		n++;
	}
	return n;
}

static void start_next(struct cats_gateway *gw);

static uint32_t auth_rejected(const struct cats_auth_stats *st)
{
	return st->rejected_malformed + st->rejected_sender + st->rejected_mic +
	       st->rejected_replay;
}

/* Frames a node's authentication rejected (malformed / sender include SomeGather's). */
static uint32_t counters_rejected(const cats_NodeCounters *c)
{
	return c->rejected_mic + c->rejected_replay + c->rejected_sender;
}

static void finish(struct cats_gateway *gw)
{
	struct cats_gw_request *rq = &gw->queue[gw->q_run];
	cats_InferResult *res = &gw->msg.msg.infer_result;
	uint32_t t = now(gw);
	uint64_t max_macs = 0;
	uint16_t answered = 0, reported = 0;
	uint64_t col_rx = 0, col_lost = 0;
	uint32_t rejected = 0, columns_lost = 0; /* in this inference, as the nodes report */

	memset(&gw->msg, 0, sizeof(gw->msg));
	gw->msg.which_msg = cats_GatewayMessage_infer_result_tag;
	res->request_id = rq->request_id;
	res->inference_id = gw->inference_id;
	res->output.size = gw->outputs;
	memcpy(res->output.bytes, gw->output, gw->outputs);
	res->output_scale = gw->output_scale;
	for (uint16_t d = 0; d < gw->nodes; d++) {
		struct cats_gw_node *n = &gw->node[d];

		if (n->answer == CATS_GW_DONE) {
			answered++;
		} else {
			res->missing_nodes[res->missing_nodes_count++] = d;
		}
		if (n->fresh) {
			/* Counters of this inference: link quality from their change. */
			const cats_NodeCounters *c = &n->counters, *p = &n->prev_counters;
			uint32_t rx = c->columns_received >= p->columns_received
					      ? c->columns_received - p->columns_received
					      : c->columns_received;
			uint32_t lost = c->columns_lost >= p->columns_lost
						? c->columns_lost - p->columns_lost
						: c->columns_lost;

			n->link_quality = rx + lost ? (float)rx / (float)(rx + lost) : 1.0f;
			columns_lost += lost;
			rejected += counters_rejected(c) - counters_rejected(p);
			n->prev_counters = *c;
			if (n->answer == CATS_GW_DONE) {
				col_rx += rx;
				col_lost += lost;
				reported++;
			}
			if (c->macs > max_macs) {
				max_macs = c->macs;
			}
		}
		node_status(gw, d, t, &res->nodes[d]);
	}
	res->nodes_count = gw->nodes;
	/* Columns expected = what the reporting nodes expected, plus as many again for each node
	 * that gave no output (all of its own missing); frames lost on the air with no counters
	 * to show them (a node that reported none) still make the result degraded. */
	{
		double per_node = reported ? (double)(col_rx + col_lost) / reported : 0.0;
		double expected = (double)(col_rx + col_lost) +
				  per_node * (double)res->missing_nodes_count;
		double missing = (double)col_lost + per_node * (double)res->missing_nodes_count;

		if (expected > 0.0) {
			res->missing_fraction = (float)(missing / expected);
		} else if (res->missing_nodes_count > 0) {
			res->missing_fraction = (float)res->missing_nodes_count / (float)gw->nodes;
		}
		if (res->missing_fraction == 0.0f && gw->slot_frames_lost > 0 &&
		    gw->slot_deliveries > 0) {
			res->missing_fraction =
				(float)gw->slot_frames_lost / (float)gw->slot_deliveries;
		}
	}
	res->has_gateway_counters = true;
	cats_output_counters(&(struct cats_sg_stats){0}, &gw->auth.stats, &res->gateway_counters);
	rejected += auth_rejected(&gw->auth.stats) - gw->auth_rejected_at_start;
	res->degraded = res->missing_nodes_count > 0 || res->missing_fraction > 0.0f ||
		       (rejected > 0 && columns_lost > 0);
	res->frames_lost = gw->slot_frames_lost;
	res->air_bytes = gw->air_bytes;
	res->modelled_latency_s =
		(float)(gw->airtime_us / 1e6 +
			(double)max_macs * (double)gw->cfg.instr_per_mac /
				(double)gw->cfg.cpu_hz);
	if (answered == 0) {
		res->status = CATS_GW_ERR_NO_NODES;
		snprintf(res->message, sizeof(res->message),
			 "no node delivered its output (deadline %u ms)", (unsigned)rq->deadline_ms);
	} else if (res->missing_nodes_count > 0) {
		snprintf(res->message, sizeof(res->message),
			 "degraded: %u of %u nodes did not deliver their output (zeros); %u%% of "
			 "expected columns missing",
			 (unsigned)res->missing_nodes_count, (unsigned)gw->nodes,
			 (unsigned)(res->missing_fraction * 100.0f + 0.5f));
	} else if (res->degraded) {
		snprintf(res->message, sizeof(res->message),
			 "degraded: %u%% of expected columns missing (lost on the air; %u frames "
			 "failed authentication)",
			 (unsigned)(res->missing_fraction * 100.0f + 0.5f), (unsigned)rejected);
	} else {
		snprintf(res->message, sizeof(res->message), "ok");
	}
	GW_LOGF(gw, CATS_LOG_INF,
		"gateway: inference %u (request %llu): %s; %u slots, %u frames lost, %llu air "
		"bytes, %lu us modelled",
		(unsigned)gw->inference_id, (unsigned long long)rq->request_id, res->message,
		(unsigned)gw->slots, (unsigned)gw->slot_frames_lost,
		(unsigned long long)gw->air_bytes,
		(unsigned long)(res->modelled_latency_s * 1e6f)); /* no %f on small libcs */
	gw->running = 0;
	gw->inferences++;
	rq->used = 0;
	gw->q_count--;
	send_msg(gw, rq->client);
	start_next(gw);
}

/* Every node answered or is known dead. */
static int all_in(const struct cats_gateway *gw)
{
	for (uint16_t d = 0; d < gw->nodes; d++) {
		const struct cats_gw_node *n = &gw->node[d];

		if (n->answer == CATS_GW_WAITING && n->link != CATS_GW_LINK_DOWN) {
			return 0;
		}
	}
	return 1;
}

static int broadcast_input(struct cats_gateway *gw, const uint8_t *input)
{
	cats_InputFrame f = cats_InputFrame_init_zero;
	size_t total = gw->input_len, hdr, chunk, fragments;
	const size_t mtu = gw->cfg.mtu - gw->auth.mic_len; /* the InputFrame's bytes */

	/* Worst-case header: every varint as long as the input length makes it. */
	hdr = 1 + varint_len(gw->inference_id) + 5 + 3 * (1 + varint_len((uint32_t)total)) + 1 +
	      varint_len(PAYLOAD_MAX);
	if (mtu <= hdr) {
		return CATS_GW_ERR_LINK;
	}
	chunk = mtu - hdr;
	if (chunk > PAYLOAD_MAX) {
		chunk = PAYLOAD_MAX;
	}
	fragments = (total + chunk - 1) / chunk;
	for (size_t i = 0; i < fragments; i++) {
		size_t off = i * chunk, n = total - off < chunk ? total - off : chunk;
		pb_ostream_t os = pb_ostream_from_buffer(&gw->air[1], mtu);
		int sealed;

		f.inference_id = gw->inference_id;
		f.partition_tag = gw->tag;
		f.fragment = (uint32_t)i;
		f.fragments = (uint32_t)fragments;
		f.offset = (uint32_t)off;
		f.payload.size = (pb_size_t)n;
		memcpy(f.payload.bytes, &input[off], n);
		gw->air[0] = CATS_AIR_INPUT;
		if (!pb_encode(&os, cats_InputFrame_fields, &f)) {
			return CATS_GW_ERR_LINK;
		}
		sealed = cats_auth_seal(&gw->auth, CATS_AIR_INPUT, gw->inference_id, &gw->air[1],
					os.bytes_written, sizeof(gw->air) - 1);
		if (sealed < 0 || gw->io.air_send(gw->io.ctx, gw->air, 1u + (size_t)sealed) < 0) {
			return CATS_GW_ERR_LINK;
		}
		count_frame(gw, 1u + (size_t)sealed);
	}
	return CATS_OK;
}

/* The waiting request to run next: the smallest fair-queueing tag, then the oldest. */
static int next_waiting(const struct cats_gateway *gw)
{
	int best = -1;

	for (int i = 0; i < CATS_GW_QUEUE + 1; i++) {
		const struct cats_gw_request *e = &gw->queue[i];

		if (!e->used || (gw->running && i == gw->q_run)) {
			continue;
		}
		if (best < 0 || (int32_t)(e->tag - gw->queue[best].tag) < 0 ||
		    (e->tag == gw->queue[best].tag &&
		     (int32_t)(e->seq - gw->queue[best].seq) < 0)) {
			best = i;
		}
	}
	return best;
}

/* An id may be used: below the reserved limit, after asking the application for more. */
static int ids_left(struct cats_gateway *gw)
{
	uint32_t limit = gw->inference_limit;

	if (gw->next_inference < limit) {
		return 1;
	}
	if (gw->io.reserve_ids == NULL || gw->next_inference >= CATS_GW_ID_END ||
	    gw->io.reserve_ids(gw->io.ctx, gw->next_inference, &limit) != 0) {
		GW_LOGF(gw, CATS_LOG_ERR, "gateway: inference ids from %u not reserved",
			(unsigned)gw->next_inference);
		return 0;
	}
	gw->inference_limit = limit < CATS_GW_ID_END ? limit : CATS_GW_ID_END;
	return gw->next_inference < gw->inference_limit;
}

static void start_next(struct cats_gateway *gw)
{
	while (!gw->running && gw->q_count > 0) {
		int k = next_waiting(gw);
		struct cats_gw_request *rq;
		int rc;

		if (k < 0) {
			return;
		}
		rq = &gw->queue[k];
		gw->q_run = (uint16_t)k;
		if ((int32_t)(rq->tag - gw->q_vt) > 0) {
			gw->q_vt = rq->tag;
		}

		if (!ids_left(gw)) {
			rq->used = 0;
			gw->q_count--;
			reply_error(gw, rq->client, rq->request_id, CATS_GW_ERR_IDS,
				    "no unused inference id left under this key: re-key the swarm, "
				    "or the id store failed");
			continue;
		}
		gw->inference_id = gw->next_inference++;
		gw->running = 1;
		gw->deadline = now(gw) + rq->deadline_ms;
		gw->slot_frames_lost = gw->slot_frames_sent = gw->slot_deliveries = gw->slots = 0;
		gw->auth_rejected_at_start = auth_rejected(&gw->auth.stats);
		gw->air_bytes = 0;
		gw->airtime_us = 0;
		memset(gw->output, 0, sizeof(gw->output));
		memset(gw->out_have, 0, sizeof(gw->out_have));
		for (uint16_t d = 0; d < gw->nodes; d++) {
			gw->node[d].answer = CATS_GW_WAITING;
			gw->node[d].got = 0;
			gw->node[d].fresh = 0;
		}
		GW_LOGF(gw, CATS_LOG_INF, "gateway: inference %u for request %llu (client %u)",
			(unsigned)gw->inference_id, (unsigned long long)rq->request_id,
			(unsigned)rq->client);
		rc = broadcast_input(gw, rq->input);
		if (rc != CATS_OK) {
			gw->running = 0;
			rq->used = 0;
			gw->q_count--;
			reply_error(gw, rq->client, rq->request_id, rc,
				    "broadcasting the input to the swarm failed");
			continue;
		}
		if (all_in(gw)) {
			finish(gw); /* every node is down: answered at once */
			return;
		}
	}
}

static uint16_t client_entries(const struct cats_gateway *gw, uint32_t client)
{
	uint16_t n = 0;

	for (int i = 0; i < CATS_GW_QUEUE + 1; i++) {
		n += (uint16_t)(gw->queue[i].used && gw->queue[i].client == client);
	}
	return n;
}

/* The queue is full: the newest waiting request of the client holding the most entries, if
 * it holds at least two more than `client` does (one client cannot keep the others out), is
 * to be withdrawn (answered "gateway busy" like any other refusal); -1 when none is. */
static int room_victim(const struct cats_gateway *gw, uint32_t client)
{
	uint16_t mine = client_entries(gw, client), most = 0;
	int victim = -1;

	for (int i = 0; i < CATS_GW_QUEUE + 1; i++) {
		const struct cats_gw_request *e = &gw->queue[i];
		uint16_t n;

		if (!e->used || (gw->running && i == gw->q_run) || e->client == client) {
			continue;
		}
		n = client_entries(gw, e->client);
		if (n > most || (n == most && victim >= 0 &&
				 (int32_t)(e->seq - gw->queue[victim].seq) > 0)) {
			most = n;
			victim = i;
		}
	}
	return victim >= 0 && most >= mine + 2u ? victim : -1;
}

/* rq is the scratch message, which every reply reuses: read it before replying. */
static int on_request(struct cats_gateway *gw, uint32_t client, const cats_InferRequest *rq)
{
	struct cats_gw_request *slot = NULL;
	int victim = -1;
	uint32_t victim_client = 0;
	uint64_t victim_id = 0;

	if (rq->partition_hash.size != 0 &&
	    (rq->partition_hash.size != sizeof(gw->hash) ||
	     memcmp(rq->partition_hash.bytes, gw->hash, sizeof(gw->hash)) != 0)) {
		reply_error(gw, client, rq->request_id, CATS_GW_ERR_HASH,
			    "partition hash does not match the swarm's");
		return CATS_GW_ERR_HASH;
	}
	if (rq->input.size != gw->input_len) {
		snprintf(gw->text, sizeof(gw->text),
			 "input must be %u int8 values (tokens %u x patch %u), got %u",
			 (unsigned)gw->input_len, gw->tokens, gw->patch, (unsigned)rq->input.size);
		reply_error(gw, client, rq->request_id, CATS_GW_ERR_INPUT, gw->text);
		return CATS_GW_ERR_INPUT;
	}
	if (rq->deadline_ms > CATS_GW_DEADLINE_MAX_MS) {
		snprintf(gw->text, sizeof(gw->text), "deadline_ms %lu is beyond %lu (10 min)",
			 (unsigned long)rq->deadline_ms, (unsigned long)CATS_GW_DEADLINE_MAX_MS);
		reply_error(gw, client, rq->request_id, CATS_GW_ERR_DEADLINE, gw->text);
		return CATS_GW_ERR_DEADLINE;
	}
	if (gw->q_count >= CATS_GW_QUEUE + 1u) {
		victim = room_victim(gw, client);
		if (victim < 0) {
			reply_error(gw, client, rq->request_id, CATS_GW_ERR_BUSY,
				    "gateway busy: too many requests waiting");
			return CATS_GW_ERR_BUSY;
		}
		slot = &gw->queue[victim];
		victim_client = slot->client;
		victim_id = slot->request_id;
		slot->used = 0;
		gw->q_count--;
	}
	for (int i = 0; slot == NULL && i < CATS_GW_QUEUE + 1; i++) {
		if (!gw->queue[i].used) {
			slot = &gw->queue[i];
		}
	}
	if (slot == NULL) { /* cannot happen: q_count counts the used entries */
		reply_error(gw, client, rq->request_id, CATS_GW_ERR_BUSY, "gateway busy");
		return CATS_GW_ERR_BUSY;
	}
	slot->tag = gw->q_vt;
	for (int i = 0; i < CATS_GW_QUEUE + 1; i++) {
		const struct cats_gw_request *e = &gw->queue[i];

		if (e->used && e->client == client && (int32_t)(e->tag - slot->tag) > 0) {
			slot->tag = e->tag;
		}
	}
	slot->tag++;
	slot->seq = gw->q_seq++;
	slot->used = 1;
	slot->request_id = rq->request_id;
	slot->client = client;
	slot->deadline_ms = rq->deadline_ms ? rq->deadline_ms : gw->cfg.deadline_ms;
	memcpy(slot->input, rq->input.bytes, gw->input_len);
	gw->q_count++;
	if (victim >= 0) { /* rq is gone from here on (the reply reuses the scratch message) */
		reply_error(gw, victim_client, victim_id, CATS_GW_ERR_BUSY,
			    "gateway busy: request withdrawn to make room for another client");
	}
	start_next(gw);
	return CATS_OK;
}

int cats_gateway_on_bridge(struct cats_gateway *gw, uint32_t client, uint8_t type,
			   const uint8_t *msg, size_t len)
{
	pb_istream_t is = pb_istream_from_buffer(msg, len);

	if (type != CATS_STREAM_GATEWAY) {
		snprintf(gw->text, sizeof(gw->text),
			 "unexpected stream message type %u (want 8, GatewayMessage)", type);
		reply_error(gw, client, 0, CATS_GW_ERR_UNEXPECTED, gw->text);
		return CATS_GW_ERR_UNEXPECTED;
	}
	memset(&gw->msg, 0, sizeof(gw->msg));
	if (!pb_decode(&is, cats_GatewayMessage_fields, &gw->msg)) {
		reply_error(gw, client, 0, CATS_GW_ERR_MALFORMED,
			    "malformed GatewayMessage (does not decode, or a field is too large)");
		return CATS_GW_ERR_MALFORMED;
	}
	switch (gw->msg.which_msg) {
	case cats_GatewayMessage_infer_request_tag:
		return on_request(gw, client, &gw->msg.msg.infer_request);
	case cats_GatewayMessage_status_request_tag:
		reply_status(gw, client);
		return CATS_OK;
	case cats_GatewayMessage_client_hello_tag:
		return CATS_OK; /* admission is the transport's (cats_gateway_sim.c) */
	default:
		reply_error(gw, client, 0, CATS_GW_ERR_UNEXPECTED,
			    "expected an InferRequest or a StatusRequest");
		return CATS_GW_ERR_UNEXPECTED;
	}
}

/* ------------------------------------------------------------------------------------------ */
/* The swarm side                                                                              */
/* ------------------------------------------------------------------------------------------ */

static void heard(struct cats_gateway *gw, struct cats_gw_node *n, uint32_t tag)
{
	n->heard = 1;
	n->last_seen = now(gw);
	n->tag_ok = tag == gw->tag;
	if (n->link == CATS_GW_LINK_DOWN) {
		n->link = CATS_GW_LINK_UNKNOWN; /* back (its join may come later) */
	}
}

int cats_gateway_on_air(struct cats_gateway *gw, uint16_t src, const uint8_t *frame,
			size_t len)
{
	cats_OutputFrame f = cats_OutputFrame_init_zero;
	pb_istream_t is;
	struct cats_gw_node *n;
	int body;

	if (len < 1 || frame[0] != CATS_AIR_OUTPUT) {
		return CATS_OK; /* inputs (our own), columns: not for the gateway */
	}
	body = cats_auth_open(&gw->auth, CATS_AIR_OUTPUT, src, gw->inference_id, &frame[1],
			      len - 1, NULL);
	if (body < 0) {
		gw->frames_ignored++;
		GW_LOGF(gw, CATS_LOG_WRN, "gateway: OutputFrame from station %u rejected (%s)",
			(unsigned)src,
			body == CATS_AUTH_MIC      ? "MIC"
			: body == CATS_AUTH_REPLAY ? "replay"
			: body == CATS_AUTH_SENDER ? "sender"
						   : "malformed");
		return CATS_ERR_STATE;
	}
	is = pb_istream_from_buffer(&frame[1], (size_t)body);
	if (!pb_decode(&is, cats_OutputFrame_fields, &f) || f.sender >= gw->nodes) {
		gw->frames_ignored++;
		gw_log(gw, CATS_LOG_WRN, "gateway: malformed OutputFrame ignored");
		return CATS_ERR_ARG;
	}
	n = &gw->node[f.sender];
	heard(gw, n, f.partition_tag);
	if (!n->tag_ok) {
		gw->frames_ignored++;
		GW_LOGF(gw, CATS_LOG_WRN, "gateway: node %u is on another partition (tag %08x)",
			(unsigned)f.sender, (unsigned)f.partition_tag);
		return CATS_ERR_STATE;
	}
	if (!gw->running || f.inference_id != gw->inference_id) {
		gw->frames_ignored++;
		if (f.has_counters) {
			/* Late: its inference is over, but its cumulative counters move the baseline,
			 * so the losses of that inference are not counted against the next. */
			n->counters = n->prev_counters = f.counters;
			n->has_counters = 1;
		}
		return CATS_ERR_STATE;
	}
	count_frame(gw, len);
	if (f.has_counters) {
		n->counters = f.counters;
		n->has_counters = 1;
		n->fresh = 1;
	}
	n->status = f.status;
	if (f.status != 0) {
		GW_LOGF(gw, CATS_LOG_WRN, "gateway: node %u failed inference %u: %d",
			(unsigned)f.sender, (unsigned)f.inference_id, (int)f.status);
		n->answer = CATS_GW_FAILED;
	} else if (n->answer == CATS_GW_WAITING) {
		if (f.start != n->out_start || f.offset > n->out_count ||
		    f.payload.size > n->out_count - f.offset) {
			gw->frames_ignored++;
			GW_LOGF(gw, CATS_LOG_WRN,
				"gateway: node %u sent outputs [%u+%u, +%u), owns [%u, +%u)",
				(unsigned)f.sender, (unsigned)f.start, (unsigned)f.offset,
				(unsigned)f.payload.size, n->out_start, n->out_count);
			return CATS_ERR_COLUMN;
		}
		for (pb_size_t i = 0; i < f.payload.size; i++) {
			uint32_t k = (uint32_t)n->out_start + f.offset + i;
			uint8_t bit = (uint8_t)(1u << (k & 7u));

			gw->output[k] = (int8_t)f.payload.bytes[i];
			if (!(gw->out_have[k >> 3] & bit)) {
				gw->out_have[k >> 3] |= bit;
				n->got++;
			}
		}
		if (n->got >= n->out_count) {
			n->answer = CATS_GW_DONE;
		}
	}
	if (all_in(gw)) {
		finish(gw);
	}
	return CATS_OK;
}

int cats_gateway_on_slot_end(struct cats_gateway *gw, const uint8_t *msg, size_t len)
{
	cats_SlotEnd se = cats_SlotEnd_init_zero;
	pb_istream_t is = pb_istream_from_buffer(msg, len);

	if (!pb_decode(&is, cats_SlotEnd_fields, &se)) {
		return CATS_ERR_ARG;
	}
	if (!gw->running ||
	    ((se.inference_id ^ gw->inference_id) & CATS_SG_INFERENCE_MASK) != 0) {
		return CATS_ERR_STATE;
	}
	gw->slots++;
	gw->slot_frames_sent += se.frames_sent;
	gw->slot_frames_lost += se.frames_lost;
	gw->slot_deliveries += se.deliveries;
	gw->air_bytes += se.air_bytes;
	gw->airtime_us += (double)se.airtime_us;
	return CATS_OK;
}

int cats_gateway_on_station(struct cats_gateway *gw, const uint8_t *msg, size_t len)
{
	cats_StationEvent ev = cats_StationEvent_init_zero;
	pb_istream_t is = pb_istream_from_buffer(msg, len);
	struct cats_gw_node *n;

	if (!pb_decode(&is, cats_StationEvent_fields, &ev)) {
		return CATS_ERR_ARG;
	}
	if (ev.node_id < 0 || ev.node_id >= (int32_t)gw->nodes) {
		return CATS_OK; /* the gateway itself, or not of this partition */
	}
	n = &gw->node[ev.node_id];
	if (ev.alive) {
		/* Back (restarted, or heard again after hanging) while an inference runs: it missed
		 * that inference's input, so it is not waited for (it gave no output). */
		int missed = gw->running && n->link != CATS_GW_LINK_UP &&
			     n->answer == CATS_GW_WAITING;

		heard(gw, n, ev.partition_tag);
		n->link = CATS_GW_LINK_UP;
		if (missed) {
			n->answer = CATS_GW_FAILED;
			GW_LOGF(gw, CATS_LOG_INF, "gateway: node %d is back during inference %u: "
				"not waited for in it", (int)ev.node_id, (unsigned)gw->inference_id);
		}
		if (!n->tag_ok) {
			GW_LOGF(gw, CATS_LOG_WRN, "gateway: node %d joined with partition tag %08x, "
				"ours is %08x", (int)ev.node_id, (unsigned)ev.partition_tag,
				(unsigned)gw->tag);
		} else {
			GW_LOGF(gw, CATS_LOG_INF, "gateway: node %d joined", (int)ev.node_id);
		}
	} else {
		n->link = CATS_GW_LINK_DOWN;
		GW_LOGF(gw, CATS_LOG_WRN, "gateway: node %d left", (int)ev.node_id);
		if (gw->running && all_in(gw)) {
			finish(gw);
		}
	}
	return CATS_OK;
}

void cats_gateway_poll(struct cats_gateway *gw)
{
	if (gw->running && (int32_t)(now(gw) - gw->deadline) >= 0) {
		finish(gw);
	}
}

uint32_t cats_gateway_next_ms(const struct cats_gateway *gw)
{
	int32_t left;

	if (!gw->running) {
		return UINT32_MAX;
	}
	left = (int32_t)(gw->deadline - now(gw));
	return left > 0 ? (uint32_t)left : 0;
}
