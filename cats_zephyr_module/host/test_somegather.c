/*
 * SomeGather engine test on the host, meant for the sanitizer build (-DCATS_SANITIZE=ON,
 * build/host-asan): AddressSanitizer + UBSan catch any out-of-bounds access or undefined
 * behaviour while the engine encodes and receives. Driven by tests/test_frames.py.
 *
 *   test_somegather GOLDEN_DIR OUT_DIR [MUTATIONS [SEED]]
 *
 * GOLDEN_DIR is tests/golden/frames (export/node-<d>, input.bin, index.txt, NNN_*.bin).
 *  1. encode: every node of the export runs the golden inference with nothing received; at
 *     every exchange each node's frames for several MTUs are encoded and written to
 *     OUT_DIR/cframes.bin (records: u8 exchange, u8 sender, u16 mtu, u16 fragment, u16 count,
 *     u16 len, then the frame; little endian; fragment 0xFFFF and count 0 where the MTU
 *     cannot carry one row) for Python to compare; the golden frames a
 *     sender encodes must come out byte-identical; short output buffers are refused.
 *  2. receive: the receiver node gets the golden frames, exchange by exchange: accepted ones
 *     must complete exactly their columns (row chunks on the last chunk), rejected ones must
 *     count exactly their reason; repeats count as duplicates, old frames as stale.
 *  3. fuzz: MUTATIONS (default 20000) deterministic mutations of the golden frames (bit
 *     flips, byte sets, truncation, extension, splices, random bytes), each in a buffer of its
 *     exact size; every call must return a cats_status and count exactly one outcome. Each
 *     verdict goes to OUT_DIR/fuzz.bin (u8 receiver exchange, u8 outcome: 0 accepted, then
 *     malformed partition sender self stale future column; u8 link source; u16 mtu; u16 len;
 *     the frame). The link source is the golden frame's sender, sometimes another station.
 * Prints a summary line per part and the final counters; exits non-zero on any failure.
 */
#define _POSIX_C_SOURCE 200809L /* strtok_r */

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cats/cats_node.h"
#include "cats/cats_somegather.h"

#define MAX_NODES 16
#define MAX_ENTRIES 256
#define MAX_COLS 128

static int failures;

static void fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "FAIL: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	if (++failures > 50) {
		fprintf(stderr, "too many failures\n");
		exit(1);
	}
}

static uint8_t *read_file(const char *dir, const char *name, size_t *len)
{
	char path[1024];
	FILE *f;
	long n;
	uint8_t *buf;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "rb");
	if (f == NULL) {
		fprintf(stderr, "cannot open %s\n", path);
		exit(2);
	}
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(n > 0 ? (size_t)n : 1u);
	if (buf == NULL || (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)) {
		fprintf(stderr, "cannot read %s\n", path);
		exit(2);
	}
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* ------------------------------------------------------------------------------------------ */

struct entry {
	char file[128];
	int at, mtu, sender, fragment, row_start, row_count, ncols;
	char expect[32], link[32];
	uint16_t cols[MAX_COLS];
	uint8_t *data;
	size_t len;
};

static struct entry entries[MAX_ENTRIES];
static int n_entries;
static uint32_t inference_id;
static int receiver, n_nodes;

static void read_index(const char *dir)
{
	size_t len;
	char *text = (char *)read_file(dir, "index.txt", &len);
	char *line, *save = NULL;

	text = realloc(text, len + 1);
	text[len] = 0;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		struct entry *e;
		char *tok, *s2 = NULL;
		int field = 0;

		if (line[0] == '#') {
			char *p = strstr(line, "inference ");

			if (p) {
				sscanf(p, "inference %u receiver %d nodes %d", &inference_id,
				       &receiver, &n_nodes);
			}
			continue;
		}
		if (n_entries == MAX_ENTRIES) {
			fprintf(stderr, "index too long\n");
			exit(2);
		}
		e = &entries[n_entries++];
		for (tok = strtok_r(line, " ", &s2); tok; tok = strtok_r(NULL, " ", &s2), field++) {
			switch (field) {
			case 0: snprintf(e->file, sizeof(e->file), "%s", tok); break;
			case 1: e->at = atoi(tok); break;
			case 2: snprintf(e->expect, sizeof(e->expect), "%s", tok); break;
			case 3: snprintf(e->link, sizeof(e->link), "%s", tok); break;
			case 4: e->mtu = atoi(tok); break;
			case 5: e->sender = atoi(tok); break;
			case 6: e->fragment = atoi(tok); break;
			case 7: e->row_start = atoi(tok); break;
			case 8: e->row_count = atoi(tok); break;
			default:
				if (e->ncols < MAX_COLS) {
					e->cols[e->ncols++] = (uint16_t)atoi(tok);
				}
			}
		}
		e->data = read_file(dir, e->file, &e->len);
	}
	free(text);
	if (n_nodes < 2 || n_nodes > MAX_NODES || receiver >= n_nodes || n_entries == 0) {
		fprintf(stderr, "bad index header\n");
		exit(2);
	}
}

/* ------------------------------------------------------------------------------------------ */

struct loaded {
	uint8_t *manifest, *blob, *arena;
	size_t manifest_len, blob_len;
	struct cats_node *node;
};

static struct loaded nodes[MAX_NODES];
static int8_t *input;
static size_t input_len;

static void load_nodes(const char *dir)
{
	char sub[1024];
	int d;

	for (d = 0; d < n_nodes; d++) {
		struct loaded *l = &nodes[d];
		size_t need, need2 = 0;
		int rc;

		snprintf(sub, sizeof(sub), "%s/export/node-%d", dir, d);
		l->manifest = read_file(sub, "manifest.pb", &l->manifest_len);
		l->blob = read_file(sub, "weights.bin", &l->blob_len);
		need = cats_node_arena_needed(l->manifest, l->manifest_len);
		if (need == 0) {
			fprintf(stderr, "node %d: manifest does not decode\n", d);
			exit(2);
		}
		l->arena = malloc(need); /* exact size: ASan sees any write past it */
		rc = cats_node_init(&l->node, l->manifest, l->manifest_len, l->blob, l->blob_len,
				    l->arena, need, &need2);
		if (rc != CATS_OK) {
			fprintf(stderr, "node %d: cats_node_init %d (needed %zu)\n", d, rc, need2);
			exit(2);
		}
		if (cats_node_id(l->node) != d || cats_node_count(l->node) != n_nodes) {
			fprintf(stderr, "node %d: id/count mismatch\n", d);
			exit(2);
		}
	}
	input = (int8_t *)read_file(dir, "input.bin", &input_len);
}

static void begin(int d)
{
	int rc = cats_node_begin(nodes[d].node, inference_id, input, input_len);

	if (rc != CATS_OK) {
		fprintf(stderr, "node %d: cats_node_begin %d\n", d, rc);
		exit(2);
	}
}

/* ------------------------------------------------------------------------------------------ */

/* 107 / 232: the ColumnFrame MTUs of 802.15.4 and BLE 2M with an 8-byte MIC (the golden
 * frames' links); 115 / 240 without a MIC */
static const int mtus[] = {26, 32, 40, 107, 115, 232, 240, 255};

static void put_u16(FILE *f, unsigned v)
{
	fputc((int)(v & 0xFFu), f);
	fputc((int)((v >> 8) & 0xFFu), f);
}

static int part_encode(const char *out_dir)
{
	char path[1024];
	FILE *out;
	int d, e, m, exchanges, frames = 0, golden_checked = 0;
	struct cats_sg_stats st;

	memset(&st, 0, sizeof(st));
	snprintf(path, sizeof(path), "%s/cframes.bin", out_dir);
	out = fopen(path, "wb");
	if (out == NULL) {
		fprintf(stderr, "cannot write %s\n", path);
		exit(2);
	}
	for (d = 0; d < n_nodes; d++) {
		begin(d);
	}
	exchanges = cats_node_exchanges(nodes[0].node);
	for (e = 0; e < exchanges; e++) {
		for (d = 0; d < n_nodes; d++) {
			struct cats_node *n = nodes[d].node;

			if (cats_node_current_exchange(n) != e) {
				fail("node %d at exchange %d, expected %d", d,
				     cats_node_current_exchange(n), e);
			}
			for (m = 0; m < (int)(sizeof(mtus) / sizeof(mtus[0])); m++) {
				int count = cats_sg_frame_count(n, (size_t)mtus[m]);
				int i;

				if (count == CATS_ERR_ARG && mtus[m] < 32) {
					/* the MTU cannot carry one row here: a marker record */
					fputc(e, out);
					fputc(d, out);
					put_u16(out, (unsigned)mtus[m]);
					put_u16(out, 0xFFFFu);
					put_u16(out, 0);
					put_u16(out, 0);
					continue;
				}
				if (count < 1) {
					fail("node %d e %d mtu %d: frame count %d", d, e, mtus[m],
					     count);
					continue;
				}
				for (i = 0; i < count; i++) {
					uint8_t *buf = malloc((size_t)mtus[m]);
					int len = cats_sg_encode(n, (uint16_t)i, (size_t)mtus[m], buf,
								 (size_t)mtus[m], &st);
					int k;

					if (len <= 0 || len > mtus[m]) {
						fail("node %d e %d mtu %d frame %d: encode %d", d, e,
						     mtus[m], i, len);
						free(buf);
						continue;
					}
					fputc(e, out);
					fputc(d, out);
					put_u16(out, (unsigned)mtus[m]);
					put_u16(out, (unsigned)i);
					put_u16(out, (unsigned)count);
					put_u16(out, (unsigned)len);
					fwrite(buf, 1, (size_t)len, out);
					frames++;
					for (k = 0; k < n_entries; k++) {
						const struct entry *g = &entries[k];

						if (g->sender == d && g->at == e && g->mtu == mtus[m] &&
						    g->fragment == i && !strcmp(g->expect, "ok")) {
							golden_checked++;
							if ((size_t)len != g->len ||
							    memcmp(buf, g->data, g->len)) {
								fail("%s: C encoding differs", g->file);
							}
						}
					}
					/* every shorter output buffer is refused, never overrun */
					if (i == 0) {
						int cap;

						for (cap = 0; cap < len; cap++) {
							uint8_t *small = malloc(cap ? (size_t)cap : 1u);
							int r = cats_sg_encode(n, 0, (size_t)mtus[m],
									       small, (size_t)cap,
									       NULL);

							if (r >= 0) {
								fail("cap %d accepted", cap);
							}
							free(small);
						}
					}
					free(buf);
				}
				if (cats_sg_encode(n, (uint16_t)count, (size_t)mtus[m], (uint8_t *)path,
						   sizeof(path), NULL) >= 0) {
					fail("frame index past the count accepted");
				}
			}
			if (cats_sg_frame_count(n, 0) >= 0 ||
			    cats_sg_frame_count(n, CATS_SG_FRAME_MAX + 1) >= 0 ||
			    cats_sg_frame_count(n, 8) >= 0) {
				fail("bad mtu accepted");
			}
		}
		for (d = 0; d < n_nodes; d++) {
			if (cats_sg_compute(nodes[d].node, &st) != CATS_OK) {
				fail("node %d: compute at %d", d, e);
			}
		}
	}
	if (cats_sg_frame_count(nodes[0].node, 115) != CATS_ERR_STATE) {
		fail("frame count of a finished node");
	}
	fclose(out);
	if (st.frames_sent != (uint32_t)frames) {
		fail("frames_sent %u != %d", st.frames_sent, frames);
	}
	printf("encode: %d frames from %d nodes x %d exchanges x %d MTUs, %d golden "
	       "byte-identical\n",
	       frames, n_nodes, exchanges, (int)(sizeof(mtus) / sizeof(mtus[0])), golden_checked);
	return golden_checked;
}

/* ------------------------------------------------------------------------------------------ */

static uint32_t *counter(struct cats_sg_stats *st, const char *reason)
{
	if (!strcmp(reason, "malformed")) return &st->rejected_malformed;
	if (!strcmp(reason, "partition")) return &st->rejected_partition;
	if (!strcmp(reason, "sender")) return &st->rejected_sender;
	if (!strcmp(reason, "self")) return &st->rejected_self;
	if (!strcmp(reason, "stale")) return &st->rejected_stale;
	if (!strcmp(reason, "future")) return &st->rejected_future;
	if (!strcmp(reason, "column")) return &st->rejected_column;
	if (!strcmp(reason, "ok")) return &st->frames_received;
	fprintf(stderr, "unknown reason %s\n", reason);
	exit(2);
}

static uint32_t outcomes(const struct cats_sg_stats *s)
{
	return s->frames_received + s->rejected_malformed + s->rejected_partition +
	       s->rejected_sender + s->rejected_self + s->rejected_stale + s->rejected_future +
	       s->rejected_column;
}

/* Feed one frame (copied into a buffer of its exact size); check exactly `reason` counted. */
static int feed(struct cats_node *n, int sender, int mtu, const uint8_t *data, size_t len,
		const char *reason, struct cats_sg_stats *st, const char *what)
{
	struct cats_sg_stats before = *st;
	uint8_t *copy = malloc(len ? len : 1u);
	uint32_t *c;
	int rc;

	memcpy(copy, data, len);
	rc = cats_sg_receive(n, (uint16_t)sender, (size_t)mtu, copy, len, st);
	free(copy);
	if (outcomes(st) != outcomes(&before) + 1) {
		fail("%s: %u outcomes counted", what, outcomes(st) - outcomes(&before));
	}
	if (reason) {
		c = counter(st, reason);
		if (*c != *counter(&before, reason) + 1) {
			fail("%s: expected %s", what, reason);
		}
		if ((rc == CATS_OK) != !strcmp(reason, "ok")) {
			fail("%s: status %d for %s", what, rc, reason);
		}
	}
	return rc;
}

/* Held columns of the current exchange that are not the node's own (owner != self). */
static int check_complete(struct cats_node *n, const uint8_t *expect, const char *what)
{
	const struct cats_exchange *ex = cats_node_exchange(n, (uint16_t)cats_node_current_exchange(n));
	int i, bad = 0;

	for (i = 0; i < ex->n_held; i++) {
		uint16_t c = ex->held[i];

		if (cats_node_owner(n, ex->space, c) == cats_node_id(n)) {
			continue;
		}
		if (!!cats_node_has(n, c) != !!expect[c]) {
			fail("%s: column %u complete=%d, expected %d", what, c, cats_node_has(n, c),
			     expect[c]);
			bad++;
		}
	}
	return bad;
}

static void part_receive(void)
{
	struct cats_node *n = nodes[receiver].node;
	struct cats_sg_stats st;
	uint8_t expect[65536];
	int e, k, exchanges = cats_node_exchanges(n), accepted = 0, rejected = 0, dups = 0;

	memset(&st, 0, sizeof(st));
	begin(receiver);
	for (e = 0; e < exchanges; e++) {
		const struct cats_exchange *ex = cats_node_exchange(n, (uint16_t)e);
		char group[32] = "";

		memset(expect, 0, sizeof(expect));
		/* accepted frames, one link at a time (a fresh start between links at 0) */
		for (k = 0; k < n_entries; k++) {
			int j, m, seen = 0;

			if (entries[k].at != e || strcmp(entries[k].expect, "ok")) {
				continue;
			}
			for (j = 0; j < k; j++) {
				seen |= entries[j].at == e && !strcmp(entries[j].expect, "ok") &&
					!strcmp(entries[j].link, entries[k].link);
			}
			if (seen) {
				continue;
			}
			if (group[0]) {
				if (e != 0) {
					fail("several links at exchange %d", e);
				}
				begin(receiver);
				memset(expect, 0, sizeof(expect));
			}
			snprintf(group, sizeof(group), "%s", entries[k].link);
			for (m = k; m < n_entries; m++) {
				struct entry *g = &entries[m];

				if (g->at != e || strcmp(g->expect, "ok") || strcmp(g->link, group)) {
					continue;
				}
				feed(n, g->sender, g->mtu, g->data, g->len, "ok", &st, g->file);
				accepted++;
				if (g->row_start + g->row_count == ex->rows) {
					for (j = 0; j < g->ncols; j++) {
						expect[g->cols[j]] = 1;
					}
				}
				check_complete(n, expect, g->file);
			}
		}
		/* rejected frames */
		for (k = 0; k < n_entries; k++) {
			struct entry *g = &entries[k];

			if (g->at == e && strcmp(g->expect, "ok")) {
				feed(n, g->sender, g->mtu, g->data, g->len, g->expect, &st,
				     g->file);
				rejected++;
				check_complete(n, expect, g->file);
			}
		}
		/* repeats are duplicates; frames of earlier exchanges are stale */
		for (k = 0; k < n_entries; k++) {
			struct entry *g = &entries[k];
			uint32_t d0 = st.duplicates;

			if (strcmp(g->expect, "ok") || !strcmp(g->link, "tiny")) {
				continue;
			}
			if (g->at == e && !strcmp(g->link, group)) {
				feed(n, g->sender, g->mtu, g->data, g->len, "ok", &st, g->file);
				if (st.duplicates != d0 + (uint32_t)g->ncols) {
					fail("%s: repeat not counted as duplicates", g->file);
				}
				dups++;
			} else if (g->at < e) {
				feed(n, g->sender, g->mtu, g->data, g->len, "stale", &st,
				     g->file);
				rejected++;
			} else if (g->at > e) {
				feed(n, g->sender, g->mtu, g->data, g->len, "future", &st,
				     g->file);
				rejected++;
			}
			check_complete(n, expect, g->file);
		}
		if (cats_sg_compute(n, &st) != CATS_OK) {
			fail("receiver: compute at %d", e);
		}
	}
	/* a finished node takes nothing */
	feed(n, entries[0].sender, entries[0].mtu, entries[0].data, entries[0].len, "stale", &st,
	     "after the last exchange");
	if (st.columns_lost == 0) {
		fail("columns_lost not counted");
	}
	printf("receive: %d accepted, %d rejected as expected, %d repeats as duplicates "
	       "(%u columns), %u columns received, %u lost\n",
	       accepted, rejected, dups, st.duplicates, st.columns_received, st.columns_lost);
}

/* ------------------------------------------------------------------------------------------ */

static uint64_t rng_state;

static uint32_t rnd(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

static const char *const reasons[8] = {"ok",    "malformed", "partition", "sender",
				       "self",  "stale",     "future",    "column"};

static void part_fuzz(long mutations, uint64_t seed, FILE *log)
{
	struct cats_node *n = nodes[receiver].node;
	struct cats_sg_stats st;
	uint8_t buf[2 * CATS_SG_FRAME_MAX + 64];
	int ok_idx[MAX_ENTRIES], n_ok = 0, k, e;
	long i, accepted_mut = 0;
	int e_target = 0;

	memset(&st, 0, sizeof(st));
	rng_state = seed ? seed : 0x9E3779B97F4A7C15ULL;
	for (k = 0; k < n_entries; k++) {
		if (!strcmp(entries[k].expect, "ok")) {
			ok_idx[n_ok++] = k;
		}
	}
	begin(receiver);
	for (i = 0; i < mutations; i++) {
		const struct entry *g;
		size_t len, j;
		uint32_t kind, reps;
		int src;
		struct cats_sg_stats before;

		if (i % 1000 == 0) {
			/* restart, then move the receiver to the exchange of the frames used next */
			begin(receiver);
			e_target = entries[ok_idx[rnd() % (uint32_t)n_ok]].at;
			for (e = 0; e < e_target; e++) {
				cats_sg_compute(n, &st);
			}
		}
		do { /* mostly frames of the receiver's exchange */
			g = &entries[ok_idx[rnd() % (uint32_t)n_ok]];
		} while (g->at != e_target && (rnd() & 3u));
		len = g->len;
		src = g->sender;
		if (rnd() % 16u == 0) { /* another link source, a station outside the swarm too */
			src = (int)(rnd() % (uint32_t)(n_nodes + 1));
		}
		kind = rnd() % 8u;
		memcpy(buf, g->data, len);
		switch (kind) {
		case 0: /* flip bits */
			for (reps = 1 + rnd() % 4u; reps; reps--) {
				buf[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8u));
			}
			break;
		case 1: /* set bytes */
			for (reps = 1 + rnd() % 3u; reps; reps--) {
				buf[rnd() % len] = (uint8_t)rnd();
			}
			break;
		case 2: /* truncate */
			len = rnd() % len;
			break;
		case 3: /* extend with random bytes, past the frame limit sometimes */
			reps = rnd() % (uint32_t)(sizeof(buf) - len);
			for (j = 0; j < reps; j++) {
				buf[len + j] = (uint8_t)rnd();
			}
			len += reps;
			break;
		case 4: { /* splice: head of this frame, tail of another */
			const struct entry *h = &entries[ok_idx[rnd() % (uint32_t)n_ok]];
			size_t cut = rnd() % len, from = rnd() % h->len;

			memcpy(buf + cut, h->data + from, h->len - from);
			len = cut + h->len - from;
			break;
		}
		case 5: /* random bytes */
			len = rnd() % (CATS_SG_FRAME_MAX + 8u);
			for (j = 0; j < len; j++) {
				buf[j] = (uint8_t)rnd();
			}
			break;
		case 6: /* a varint byte made huge: sets continuation bits */
			for (reps = 1 + rnd() % 3u; reps; reps--) {
				buf[rnd() % len] |= 0x80u;
			}
			break;
		default: /* delete or duplicate a byte */
			j = rnd() % len;
			if (rnd() & 1u) {
				memmove(buf + j, buf + j + 1, len - j - 1);
				len--;
			} else if (len < sizeof(buf)) {
				memmove(buf + j + 1, buf + j, len - j);
				len++;
			}
			break;
		}
		before = st;
		if (feed(n, src, g->mtu, buf, len, NULL, &st, "mutation") == CATS_OK) {
			accepted_mut++;
		}
		if (log) { /* the verdict, for tests/test_frames.py to compare with cats.artefacts.frames */
			int r;

			for (r = 0; r < 8 && *counter(&st, reasons[r]) == *counter(&before, reasons[r]);
			     r++) {
			}
			fputc(cats_node_current_exchange(n), log);
			fputc(r, log);
			fputc(src, log);
			put_u16(log, (unsigned)g->mtu);
			put_u16(log, (unsigned)len);
			fwrite(buf, 1, len, log);
		}
	}
	/* the node still runs to the end */
	while (cats_node_current_exchange(n) >= 0) {
		if (cats_sg_compute(n, &st) != CATS_OK) {
			fail("compute after fuzzing");
			break;
		}
	}
	if (st.frames_received != (uint32_t)accepted_mut) {
		fail("frames_received %u != %ld accepted", st.frames_received, accepted_mut);
	}
	printf("fuzz: %ld mutations: %u accepted, malformed %u, partition %u, "
	       "sender %u, self %u, stale %u, future %u, column %u, duplicates %u\n",
	       mutations, st.frames_received, st.rejected_malformed,
	       st.rejected_partition, st.rejected_sender, st.rejected_self, st.rejected_stale,
	       st.rejected_future, st.rejected_column, st.duplicates);
}

int main(int argc, char **argv)
{
	long mutations = 20000;
	uint64_t seed = 1;

	if (argc < 3) {
		fprintf(stderr, "usage: %s GOLDEN_DIR OUT_DIR [MUTATIONS [SEED]]\n", argv[0]);
		return 2;
	}
	if (argc > 3) {
		mutations = atol(argv[3]);
	}
	if (argc > 4) {
		seed = strtoull(argv[4], NULL, 0);
	}
	read_index(argv[1]);
	load_nodes(argv[1]);
	if (part_encode(argv[2]) == 0) {
		fail("no golden frame compared");
	}
	part_receive();
	{
		char path[1024];
		FILE *log;

		snprintf(path, sizeof(path), "%s/fuzz.bin", argv[2]);
		log = fopen(path, "wb");
		part_fuzz(mutations, seed, log);
		if (log) {
			fclose(log);
		}
	}
	if (failures) {
		printf("FAILED: %d failures\n", failures);
		return 1;
	}
	printf("OK\n");
	return 0;
}
