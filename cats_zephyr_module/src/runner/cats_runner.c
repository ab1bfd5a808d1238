/*
 * The exchange loop of one node over a cats_port link (see include/cats/cats_runner.h).
 */
#include "cats/cats_runner.h"

#include <string.h>

#include "cats/cats_stream.h"

static void log_msg(const struct cats_runner *r, enum cats_log_level level, const char *msg)
{
	if (r->port->log != NULL) {
		r->port->log(r->port->ctx, level, msg);
	}
}

/* The ColumnFrame's bytes: the link's MTU less the MIC (the same for every node of a swarm:
 * a receiver plans the sender's frames with it). */
static size_t column_mtu(const struct cats_runner *r)
{
	return (r->port->link.mtu < CATS_SG_FRAME_MAX ? r->port->link.mtu : CATS_SG_FRAME_MAX) -
	       r->auth->mic_len;
}

void cats_runner_init(struct cats_runner *r, struct cats_node *node,
		      const struct cats_port *port, struct cats_auth *auth,
		      uint32_t exchange_timeout_ms)
{
	memset(r, 0, sizeof(*r));
	r->node = node;
	r->port = port;
	r->auth = auth;
	r->exchange_timeout_ms = exchange_timeout_ms;
	r->slot_closed = -1;
	if (node != NULL && port != NULL && auth != NULL && port->link.mtu > auth->mic_len) {
		/* the frame plan of every exchange, once per partition (not per inference) */
		(void)cats_sg_plan(node, column_mtu(r));
	}
}

/* Every held column complete: nothing more to wait for in this exchange. */
static int all_present(const struct cats_node *n)
{
	return cats_node_all_present(n);
}

/* Authenticate one frame from link source `src`, feed it; keep it for later if it belongs to
 * an exchange we have not reached (stashed frames are authentic already). */
static int feed(struct cats_runner *r, const uint8_t *frame, size_t len, uint16_t src,
		int may_stash)
{
	uint32_t future = r->stats.rejected_future;
	int rc = cats_auth_open(r->auth, CATS_AIR_COLUMN, src, cats_node_inference(r->node), frame,
				len, NULL);

	if (rc < 0) {
		return CATS_ERR_ARG; /* counted in r->auth->stats */
	}
	len = (size_t)rc;
	rc = cats_sg_receive(r->node, src, column_mtu(r), frame, len, &r->stats);

	if (rc == CATS_ERR_STATE && r->stats.rejected_future != future && may_stash) {
		if (r->n_stash < CATS_RUNNER_STASH) {
			memcpy(r->stash[r->n_stash], frame, len);
			r->stash_len[r->n_stash] = (uint16_t)len;
			r->stash_src[r->n_stash] = src;
			r->n_stash++;
			r->stats.rejected_future = future; /* not lost (yet) */
		} else {
			r->stash_dropped++;
		}
	}
	return rc;
}

static void replay_stash(struct cats_runner *r)
{
	uint16_t n = r->n_stash, kept = 0;

	r->n_stash = 0;
	for (uint16_t i = 0; i < n; i++) {
		uint32_t future = r->stats.rejected_future;
		int rc = cats_sg_receive(r->node, r->stash_src[i], column_mtu(r), r->stash[i],
					 r->stash_len[i], &r->stats);

		if (rc == CATS_ERR_STATE && r->stats.rejected_future != future) {
			/* Still ahead of us: keep it (in order) for a later exchange. */
			r->stats.rejected_future = future;
			if (kept != i) {
				memcpy(r->stash[kept], r->stash[i], r->stash_len[i]);
				r->stash_len[kept] = r->stash_len[i];
				r->stash_src[kept] = r->stash_src[i];
			}
			kept++;
		}
	}
	r->n_stash = kept;
}

/* One step of listening: take what the link has (a frame, or the end of a slot) or, when it
 * has nothing, let the platform sleep up to max_ms. */
static void poll_link(struct cats_runner *r, int e, uint32_t max_ms)
{
	const struct cats_port *p = r->port;
	uint16_t src = UINT16_MAX;
	int len = p->link.recv(p->link.ctx, r->frame, sizeof(r->frame), &src);

	if (len == CATS_LINK_SLOT_END) {
		uint32_t inf, ex;

		cats_link_slot_end_get(r->frame, &inf, &ex);
		if (((inf ^ cats_node_inference(r->node)) & CATS_SG_INFERENCE_MASK) == 0 &&
		    ex >= (uint32_t)e && ex < CATS_MAX_EXCHANGES) {
			r->slot_closed = (int32_t)ex;
		}
	} else if (len > 0) {
		(void)feed(r, r->frame, (size_t)len, src, 1);
	} else if (len == 0 && r->idle != NULL) {
		r->idle(r->idle_ctx, max_ms);
	}
}

/* Every held column of `sender` in the current exchange is here: its turn is over. */
static int sender_done(const struct cats_node *n, int e, uint16_t sender)
{
	const struct cats_exchange *ex = cats_node_exchange(n, (uint16_t)e);

	for (uint16_t i = 0; i < ex->n_held; i++) {
		if (cats_node_owner(n, ex->space, ex->held[i]) == (int)sender &&
		    !cats_node_has(n, ex->held[i])) {
			return 0;
		}
	}
	return 1;
}

/* Ordered turns (turn_us_per_frame > 0): listen until every node before this one has had its
 * turn: all of its columns arrived, or its slot of (frames + 1) x turn_us_per_frame passed
 * (its frames were lost, or it is gone). Nodes with about as many frames as this one are
 * assumed; the exchange deadline bounds the wait. */
static uint32_t turn_slot_ms(const struct cats_runner *r, int frames)
{
	return (uint32_t)(((uint64_t)(frames + 1) * r->turn_us_per_frame + 999u) / 1000u);
}

static void wait_for_turn(struct cats_runner *r, int e, uint32_t start, int frames,
			  uint32_t timeout_ms)
{
	const struct cats_port *p = r->port;
	const uint16_t self = cats_node_id(r->node);
	const uint32_t slot_ms = turn_slot_ms(r, frames);
	uint32_t turn_start = start;
	uint16_t turn = 0;

	while (turn < self) {
		uint32_t now = p->now_ms(p->ctx);

		if (now - start >= timeout_ms || r->slot_closed >= e) {
			return;
		}
		if (sender_done(r->node, e, turn) || now - turn_start >= slot_ms) {
			turn++;
			turn_start = now;
			continue;
		}
		poll_link(r, e, slot_ms - (now - turn_start));
	}
}

int cats_runner_exchange(struct cats_runner *r)
{
	const struct cats_port *p = r->port;
	struct cats_node *n = r->node;
	size_t mtu;
	uint32_t start = p->now_ms(p->ctx), timeout_ms = r->exchange_timeout_ms;
	int count, rc, e = cats_node_current_exchange(n);

	if (e < 0) {
		return CATS_ERR_STATE;
	}
	if (r->auth == NULL || p->link.mtu <= r->auth->mic_len) {
		return CATS_ERR_ARG;
	}
	mtu = column_mtu(r);
	replay_stash(r);

	count = cats_sg_frame_count(n, mtu);
	if (count < 0) {
		log_msg(r, CATS_LOG_ERR, "cats: cannot plan frames for this link MTU");
		return count;
	}
	if (r->turn_us_per_frame > 0) {
		/* the deadline covers every node's turn */
		uint32_t turns_ms = (cats_node_count(n) + 1u) * turn_slot_ms(r, count);

		timeout_ms = turns_ms > timeout_ms ? turns_ms : timeout_ms;
		wait_for_turn(r, e, start, count, timeout_ms);
	}
	for (int i = 0; i < count; i++) {
		int len = cats_sg_encode(n, (uint16_t)i, mtu, r->frame, sizeof(r->frame), &r->stats);

		if (len < 0) {
			return len;
		}
		len = cats_auth_seal(r->auth, CATS_AIR_COLUMN, cats_node_inference(n), r->frame,
				     (size_t)len, sizeof(r->frame));
		if (len < 0) {
			return len;
		}
		if (p->link.send(p->link.ctx, r->frame, (size_t)len) < 0) {
			log_msg(r, CATS_LOG_WRN, "cats: link send failed");
		}
	}

	while (!all_present(n)) {
		uint32_t elapsed = p->now_ms(p->ctx) - start;

		if (r->slot_closed >= e) {
			r->exchanges_slot_ended++;
			break;
		}
		if (elapsed >= timeout_ms) {
			r->exchanges_timed_out++;
			break;
		}
		poll_link(r, e, timeout_ms - elapsed);
	}
	rc = cats_sg_compute(n, &r->stats);
	return rc;
}

int cats_runner_infer(struct cats_runner *r, uint32_t inference_id, const int8_t *input,
		      size_t len)
{
	int rc = cats_node_begin(r->node, inference_id, input, len);

	/* Frames stashed for another inference can never be used now, nor its slot ends. */
	r->n_stash = 0;
	r->slot_closed = -1;
	while (rc == CATS_OK && cats_node_current_exchange(r->node) >= 0) {
		rc = cats_runner_exchange(r);
	}
	return rc;
}

uint64_t cats_runner_macs(const struct cats_node *n)
{
	const struct cats_model_shape *s = cats_node_shape(n);
	const uint16_t exchanges = cats_node_exchanges(n), d = cats_node_id(n);
	const uint16_t nodes = cats_node_count(n);
	/* Own columns of the space each kind of exchange sends (the model columns: attn_in's, the
	 * hidden units of the FFN and of the paper io MLPs: the exchange that sends them). */
	uint64_t own_of[CATS_HEAD_HIDDEN + 1] = {0};
	uint64_t tokens = s->tokens, macs, own_model, own_out, pairs;

	for (uint16_t e = 0; e < exchanges; e++) {
		const struct cats_exchange *ex = cats_node_exchange(n, e);

		own_of[ex->kind] = (uint64_t)(ex->own_end - ex->own_start);
	}
	own_model = own_of[CATS_ATTN_IN];
	/* tools/cats/model/partition.py split_ranges: the larger slices first */
	own_out = (uint64_t)(s->outputs / nodes) + (d < s->outputs % nodes ? 1u : 0u);
	pairs = s->task == CATS_TASK_FORECAST ? tokens * (tokens + 1) / 2 : tokens * tokens;
	/* input embedding (lean blocks; the paper input block's layers are exchanges below) */
	macs = s->io == CATS_IO_PAPER ? 0u : tokens * s->patch * own_model;
	for (uint16_t e = 0; e < exchanges; e++) {
		const struct cats_exchange *ex = cats_node_exchange(n, e);
		uint64_t held = ex->n_held;

		switch (ex->kind) {
		case CATS_ATTN_IN: /* Q, K, V of the own heads; scores and weighted values */
			macs += 3 * tokens * held * own_model + 2 * pairs * own_model;
			break;
		case CATS_ATTN_OUT:   /* output projection */
		case CATS_FFN_HIDDEN: /* FFN layer 2 */
		case CATS_IN_HIDDEN:  /* input MLP layer 2 */
			macs += tokens * held * own_model;
			break;
		case CATS_FFN_IN: /* FFN layer 1 */
			macs += tokens * held * own_of[CATS_FFN_HIDDEN];
			break;
		case CATS_IN_X: /* input MLP layer 1 and the input residual */
			macs += tokens * held * (own_of[CATS_IN_HIDDEN] + own_model);
			break;
		case CATS_HEAD_IN: /* the head (lean); head MLP layer 1 + the residual (paper) */
			macs += held * (own_of[CATS_HEAD_HIDDEN] + own_out);
			break;
		default: /* the paper head's MLP layer 2: one row */
			macs += held * own_out;
			break;
		}
	}
	return macs;
}
