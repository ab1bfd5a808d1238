/*
 * cats_node_sim: one node of the simulated swarm, the portable C core on the host.
 *
 *   cats_node_sim --node-dir DIR --medium HOST:PORT --key-file FILE [--mic 4|8]
 *                 [--arena BYTES] [--mtu N] [--timeout-ms N]
 *                 [--cycles-per-mac X | --cpu-time]
 *
 * Loads DIR/manifest.pb + DIR/weights.bin, connects to the radio medium, sends SimHello
 * (node id, nodes, partition tag, mtu), prints "ready" on stdout, then loops: assembles the
 * gateway's InputFrames (AirType 2), runs the inference through cats_runner over the medium
 * (ColumnFrames out and in as type-1 AIR frames, SlotEnd = the end of an exchange's slot),
 * and sends its output slice in OutputFrames (AirType 3) with NodeCounters (cumulative
 * SomeGather/runner counters; macs = cats_runner_macs(): its matmuls and attention, from the
 * manifest's shapes; compute_us = the modelled Cortex-M4 time macs x --cycles-per-mac / 64 MHz
 * (default 1.5), so that a seeded loss-free run sends the same bytes every time, or with
 * --cpu-time the host thread CPU time of the inference, which varies from run to run and
 * with it the length of the OutputFrame). Exits 0 on EOF from the medium or SIGTERM. Logs to
 * stderr.
 *
 * Every air frame is authenticated (cats_auth.h): the swarm key comes from --key-file (32 hex
 * digits or 16 raw bytes; never logged), --mic sets the MIC length (default 8). The medium
 * stamps every frame it delivers with its link source station (one byte before the AirType);
 * frames that fail authentication are dropped and counted (NodeCounters rejected_*).
 *
 * --mtu: the largest protobuf message per air frame (the AirType byte not counted): 115 for
 * IEEE 802.15.4 (default), 240 for BLE 2M. --timeout-ms: the last-resort exchange deadline
 * (default 10000); with the medium, SlotEnd closes exchanges, not the clock.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <pb_decode.h>
#include <pb_encode.h>

#include "cats.pb.h"
#include "cats/cats_auth.h"
#include "cats/cats_node.h"
#include "cats/cats_output.h"
#include "cats/cats_runner.h"
#include "cats/cats_somegather.h"
#include "cats/cats_stream.h"
#include "port_host.h"
#include "sim_net.h"

#define INPUT_MAX 4096
#define MAX_FRAGMENTS INPUT_MAX

static struct cats_node *node;
static struct cats_port port;
static struct cats_runner runner;
static int sock = -1;
static size_t mtu = 115;
static uint32_t tag;
static struct cats_auth auth;
static char line[256];

/* Frames and slot ends read from the medium, in order, waiting for the runner. `gen` counts
 * the inputs completed before the item arrived: a slot end older than the running inference's
 * input belongs to an earlier inference, even if the id is the same (a restarted gateway
 * numbers from 1 again), and is dropped. */
struct item {
	uint8_t slot_end;
	uint8_t src; /* link source station */
	uint16_t len;
	uint32_t gen;
	uint8_t data[CATS_SG_FRAME_MAX];
};
static uint32_t input_gen, ready_gen, run_gen;
static struct item *items;
static size_t n_items, items_head, items_cap;

/* The input being assembled, and the one ready to run. */
static struct {
	int active;
	uint32_t id;
	uint32_t fragments, got;
	size_t end;
	uint8_t seen[MAX_FRAGMENTS];
	int8_t buf[INPUT_MAX];
} asm_in;
static int ready, running;
static uint32_t ready_id, running_id;
static int8_t ready_input[INPUT_MAX], run_input[INPUT_MAX];
static size_t input_len;

static uint8_t rx_buf[CATS_STREAM_SIM_MAX_LEN + CATS_STREAM_OVERHEAD];
static struct cats_stream_decoder dec;

#define LOG(level, ...)                                                                     \
	do {                                                                                \
		snprintf(line, sizeof(line), __VA_ARGS__);                                  \
		cats_port_host_log(NULL, (level), line);                                    \
	} while (0)

static void finish(int code)
{
	LOG(CATS_LOG_INF, "node %u: exiting (%s)", node ? cats_node_id(node) : 0,
	    code ? "error" : "done");
	if (sock >= 0) {
		close(sock);
	}
	exit(code);
}

static void push(int slot_end, uint8_t src, const uint8_t *data, size_t len)
{
	struct item *it;

	if (items_head > 0 && items_head == n_items) {
		n_items = items_head = 0;
	}
	if (n_items == items_cap) {
		size_t cap = items_cap ? items_cap * 2 : 64;
		struct item *p = realloc(items, cap * sizeof(*p));

		if (p == NULL) {
			LOG(CATS_LOG_ERR, "out of memory");
			finish(1);
		}
		items = p;
		items_cap = cap;
	}
	it = &items[n_items++];
	it->slot_end = (uint8_t)slot_end;
	it->src = src;
	it->gen = input_gen;
	it->len = (uint16_t)len;
	memcpy(it->data, data, len);
}

static void on_input(uint8_t src, const uint8_t *p, size_t n)
{
	cats_InputFrame f = cats_InputFrame_init_zero;
	pb_istream_t is;
	int len = cats_auth_open(&auth, CATS_AIR_INPUT, src, cats_node_inference(node), p, n, NULL);

	if (len < 0) {
		LOG(CATS_LOG_WRN, "InputFrame from station %u rejected (authentication: %d)",
		    (unsigned)src, len);
		return;
	}
	is = pb_istream_from_buffer(p, (size_t)len);
	if (!pb_decode(&is, cats_InputFrame_fields, &f)) {
		LOG(CATS_LOG_WRN, "malformed InputFrame ignored");
		return;
	}
	if (f.partition_tag != tag) {
		LOG(CATS_LOG_WRN, "InputFrame of another partition (tag %08x) ignored",
		    (unsigned)f.partition_tag);
		return;
	}
	if ((running && f.inference_id == running_id) || (ready && f.inference_id == ready_id)) {
		return; /* already have it. Once run, the same id may come again: a restarted
			 * gateway numbers its inferences from 1 again */
	}
	if (!asm_in.active || asm_in.id != f.inference_id) {
		memset(&asm_in, 0, sizeof(asm_in));
		asm_in.active = 1;
		asm_in.id = f.inference_id;
		asm_in.fragments = f.fragments;
	}
	if (f.fragments != asm_in.fragments || f.fragments == 0 || f.fragments > MAX_FRAGMENTS ||
	    f.fragment >= f.fragments || f.offset > input_len ||
	    f.payload.size > input_len - f.offset) {
		LOG(CATS_LOG_WRN, "InputFrame %u/%u of inference %u does not fit the input",
		    (unsigned)f.fragment, (unsigned)f.fragments, (unsigned)f.inference_id);
		return;
	}
	if (asm_in.seen[f.fragment]) {
		return;
	}
	asm_in.seen[f.fragment] = 1;
	asm_in.got++;
	memcpy(&asm_in.buf[f.offset], f.payload.bytes, f.payload.size);
	if (f.offset + f.payload.size > asm_in.end) {
		asm_in.end = f.offset + f.payload.size;
	}
	if (asm_in.got == asm_in.fragments) {
		if (asm_in.end != input_len) {
			LOG(CATS_LOG_WRN, "input of inference %u has %zu bytes, want %zu",
			    (unsigned)asm_in.id, asm_in.end, input_len);
		} else {
			if (ready) {
				LOG(CATS_LOG_WRN, "inference %u superseded by %u before it ran",
				    (unsigned)ready_id, (unsigned)asm_in.id);
			}
			memcpy(ready_input, asm_in.buf, input_len);
			ready_id = asm_in.id;
			ready_gen = ++input_gen;
			ready = 1;
		}
		asm_in.active = 0;
	}
}

static void dispatch(const struct cats_stream_msg *m)
{
	switch (m->type) {
	case CATS_STREAM_AIR: /* link source station | AirType | message + MIC */
		if (m->len < 2) {
			return;
		}
		if (m->payload[1] == CATS_AIR_COLUMN) {
			if (m->len - 2u <= CATS_SG_FRAME_MAX) {
				push(0, m->payload[0], &m->payload[2], m->len - 2u);
			}
		} else if (m->payload[1] == CATS_AIR_INPUT) {
			on_input(m->payload[0], &m->payload[2], m->len - 2u);
		}
		break;
	case CATS_STREAM_SLOT_END: {
		cats_SlotEnd se = cats_SlotEnd_init_zero;
		pb_istream_t is = pb_istream_from_buffer(m->payload, m->len);
		uint8_t b[CATS_LINK_SLOT_END_LEN];

		if (pb_decode(&is, cats_SlotEnd_fields, &se)) {
			cats_link_slot_end_put(b, se.inference_id, se.exchange);
			push(1, 0, b, sizeof(b));
		}
		break;
	}
	default:
		break;
	}
}

/* Wait up to timeout_ms (-1: forever) for the medium, read what is there, dispatch it. */
static void pump(int timeout_ms)
{
	static uint8_t buf[65536];
	struct pollfd pfd = {.fd = sock, .events = POLLIN};
	ssize_t n;
	const uint8_t *p;
	size_t left;

	if (sim_stop) {
		finish(0);
	}
	if (poll(&pfd, 1, timeout_ms) <= 0) {
		if (sim_stop) {
			finish(0);
		}
		return;
	}
	n = recv(sock, buf, sizeof(buf), 0);
	if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
		LOG(CATS_LOG_INF, "medium closed the connection");
		finish(0);
	}
	if (n < 0) {
		return;
	}
	p = buf;
	left = (size_t)n;
	for (;;) {
		struct cats_stream_msg m;
		size_t used;
		int got = cats_stream_decode(&dec, p, left, &used, &m);

		p += used;
		left -= used;
		if (!got) {
			break;
		}
		dispatch(&m);
	}
}

/* --- the link the runner uses ------------------------------------------------------------- */

static int link_send(void *ctx, const uint8_t *frame, size_t len)
{
	const uint8_t air = CATS_AIR_COLUMN;

	(void)ctx;
	return sim_send(sock, CATS_STREAM_AIR, &air, 1, frame, len) == 0 ? 0 : -5;
}

static int link_recv(void *ctx, uint8_t *buf, size_t cap, uint16_t *src)
{
	struct item *it;

	(void)ctx;
	if (items_head == n_items) {
		pump(0);
	}
	while (items_head < n_items && items[items_head].slot_end &&
	       items[items_head].gen < run_gen) {
		items_head++; /* a slot end of an earlier inference */
	}
	if (items_head == n_items) {
		return 0;
	}
	it = &items[items_head++];
	if (it->len > cap) {
		return -90; /* EMSGSIZE */
	}
	memcpy(buf, it->data, it->len);
	if (!it->slot_end) {
		*src = it->src;
	}
	return it->slot_end ? CATS_LINK_SLOT_END : (int)it->len;
}

static void link_idle(void *ctx, uint32_t max_ms)
{
	(void)ctx;
	pump(max_ms > 100 ? 100 : (int)max_ms);
}

/* --- one inference ------------------------------------------------------------------------ */

static uint64_t thread_cpu_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int send_air(void *ctx, const uint8_t *air, size_t len)
{
	(void)ctx;
	if (sim_send(sock, CATS_STREAM_AIR, air, len, NULL, 0) != 0) {
		LOG(CATS_LOG_ERR, "medium write failed");
		finish(0);
	}
	return 0;
}

static void send_outputs(uint32_t id, int status, uint32_t compute_us, uint64_t macs)
{
	static uint8_t buf[CATS_STREAM_SIM_MAX_LEN];
	cats_OutputFrame f = cats_OutputFrame_init_zero;
	uint16_t start = 0, count = 0;
	const int8_t *y = status == CATS_OK ? cats_node_output(node, &start, &count) : NULL;

	if (y == NULL) {
		count = 0;
	}
	f.inference_id = id;
	f.partition_tag = tag;
	f.sender = cats_node_id(node);
	f.status = status;
	f.start = start;
	cats_output_counters(&runner.stats, &auth.stats, &f.counters);
	f.counters.rejected_future += runner.stash_dropped;
	f.counters.exchanges_timed_out = runner.exchanges_timed_out;
	f.counters.compute_us = compute_us;
	f.counters.macs = macs;
	if (cats_output_send(&f, y, count, mtu, &auth, buf, sizeof(buf), send_air, NULL) !=
	    CATS_OK) {
		LOG(CATS_LOG_ERR, "MTU %zu too small for an OutputFrame", mtu);
	}
}

static int cpu_time;               /* --cpu-time: report host CPU time as compute_us */
static double cycles_per_mac = 1.5; /* --cycles-per-mac: the modelled compute_us otherwise */

static void run_ready(uint64_t macs)
{
	uint32_t id = ready_id;
	uint64_t t0, t1;
	uint32_t timed_out = runner.exchanges_timed_out, slot = runner.exchanges_slot_ended;
	int rc;

	ready = 0;
	running = 1;
	running_id = id;
	run_gen = ready_gen;
	memcpy(run_input, ready_input, input_len); /* the next input may arrive meanwhile */
	t0 = thread_cpu_us();
	rc = cats_runner_infer(&runner, id, run_input, input_len);
	t1 = thread_cpu_us();
	LOG(CATS_LOG_INF,
	    "node %u: inference %u: %s, %llu us compute, %u exchanges closed by slot end, %u by "
	    "timeout, %u columns lost so far",
	    cats_node_id(node), (unsigned)id, cats_strerror(rc), (unsigned long long)(t1 - t0),
	    (unsigned)(runner.exchanges_slot_ended - slot),
	    (unsigned)(runner.exchanges_timed_out - timed_out),
	    (unsigned)runner.stats.columns_lost);
	send_outputs(id, rc,
		     cpu_time ? (uint32_t)(t1 - t0)
			      : (uint32_t)((double)macs * cycles_per_mac / 64.0 + 0.5),
		     macs);
	running = 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: cats_node_sim --node-dir DIR --medium HOST:PORT --key-file FILE "
			"[--mic 4|8] [--arena BYTES] [--mtu N] [--timeout-ms N] "
			"[--cycles-per-mac X | --cpu-time]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *dir = NULL, *medium = NULL, *key_file = NULL;
	unsigned long mic = CATS_AUTH_MIC_DEFAULT;
	uint8_t key[CATS_AUTH_KEY_LEN];
	char path[4096];
	size_t arena_size = 0, man_len = 0, blob_len = 0, needed = 0;
	unsigned long timeout_ms = 10000;
	uint8_t *man, *blob, *arena;
	cats_SimHello hello = cats_SimHello_init_zero;
	uint8_t hb[cats_SimHello_size];
	pb_ostream_t os;
	uint64_t macs;
	int rc;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--cpu-time")) {
			cpu_time = 1;
			continue;
		}
		if (i + 1 >= argc) {
			usage();
		}
		if (!strcmp(argv[i], "--node-dir")) {
			dir = argv[++i];
		} else if (!strcmp(argv[i], "--medium")) {
			medium = argv[++i];
		} else if (!strcmp(argv[i], "--arena")) {
			arena_size = strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--mtu")) {
			mtu = strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--cycles-per-mac")) {
			cycles_per_mac = strtod(argv[++i], NULL);
		} else if (!strcmp(argv[i], "--key-file")) {
			key_file = argv[++i];
		} else if (!strcmp(argv[i], "--mic")) {
			mic = strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--timeout-ms")) {
			timeout_ms = strtoul(argv[++i], NULL, 0);
		} else {
			usage();
		}
	}
	if (dir == NULL || medium == NULL || key_file == NULL || mtu < 16 ||
	    mtu > CATS_SG_FRAME_MAX || (mic != 4 && mic != 8)) {
		usage();
	}
	if (sim_read_key(key_file, key) != 0) {
		return 1;
	}
	sim_install_signals();
	cats_port_host_init(&port);
	snprintf(path, sizeof(path), "%s/manifest.pb", dir);
	man = sim_read_file(path, &man_len);
	snprintf(path, sizeof(path), "%s/weights.bin", dir);
	blob = sim_read_file(path, &blob_len);
	if (man == NULL || blob == NULL) {
		return 1;
	}
	if (arena_size == 0) {
		arena_size = cats_node_arena_needed(man, man_len);
	}
	arena = malloc(arena_size ? arena_size : 1);
	if (arena == NULL) {
		return 1;
	}
	rc = cats_node_init(&node, man, man_len, blob, blob_len, arena, arena_size, &needed);
	if (rc != CATS_OK) {
		LOG(CATS_LOG_ERR, "%s: %s (%d)%s%zu", dir, cats_strerror(rc), rc,
		    rc == CATS_ERR_ARENA ? ", arena bytes needed: " : ", ",
		    rc == CATS_ERR_ARENA ? needed : (size_t)0);
		return 1;
	}
	input_len = (size_t)cats_node_shape(node)->tokens * cats_node_shape(node)->patch;
	if (input_len > INPUT_MAX) {
		LOG(CATS_LOG_ERR, "input of %zu bytes is larger than %d", input_len, INPUT_MAX);
		return 1;
	}
	tag = cats_sg_partition_tag(node);
	macs = cats_runner_macs(node);
	rc = cats_auth_init(&auth, key, (uint8_t)mic, tag, cats_node_id(node), cats_node_count(node));
	memset(key, 0, sizeof(key));
	if (rc != CATS_OK) {
		LOG(CATS_LOG_ERR, "%u nodes: more than this build authenticates (%d stations)",
		    (unsigned)cats_node_count(node), CATS_AUTH_MAX_STATIONS);
		return 1;
	}
	cats_stream_decoder_init(&dec, rx_buf, sizeof(rx_buf));

	sock = sim_connect(medium);
	if (sock < 0) {
		return 1;
	}
	hello.node_id = cats_node_id(node);
	hello.nodes = cats_node_count(node);
	hello.partition_tag = tag;
	hello.mtu = (uint32_t)mtu;
	rc = sim_token(hello.token.bytes, sizeof(hello.token.bytes));
	if (rc < 0) {
		return 1;
	}
	hello.token.size = (pb_size_t)rc;
	os = pb_ostream_from_buffer(hb, sizeof(hb));
	if (!pb_encode(&os, cats_SimHello_fields, &hello) ||
	    sim_send(sock, CATS_STREAM_HELLO, hb, os.bytes_written, NULL, 0) != 0) {
		LOG(CATS_LOG_ERR, "hello to the medium failed");
		return 1;
	}

	port.link.ctx = NULL;
	port.link.mtu = mtu;
	port.link.send = link_send;
	port.link.recv = link_recv;
	cats_runner_init(&runner, node, &port, &auth, (uint32_t)timeout_ms);
	runner.idle = link_idle;

	LOG(CATS_LOG_INF, "node %u of %u on %s: tag %08x, mtu %zu, MIC %lu, arena %zu, %llu MACs "
	    "per inference", cats_node_id(node), cats_node_count(node), medium, (unsigned)tag, mtu,
	    mic, arena_size, (unsigned long long)macs);
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		if (ready) {
			run_ready(macs);
		} else {
			pump(1000);
		}
	}
}
