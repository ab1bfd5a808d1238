/*
 * cats_m4_node.elf: one node of the swarm as a bare-metal Cortex-M4F image (no RTOS).
 *
 * The node's partition (weights.bin + manifest.pb of `cats export`, node CATS_NODE_ID) is
 * linked into flash (partition_data.S), the node's memory plan lives in one static arena of
 * CATS_ARENA_SIZE bytes, and one inference runs through cats_runner over a loopback link:
 * every frame the node sends comes back to it, sealed (AES-CCM*, cats_auth) with a fixed
 * build-time key, and is rejected as its own by the link-source check, so the node sees a
 * swarm in which every other node is silent; its output then equals qref's node with every
 * other node's columns lost. That exercises the whole runtime (manifest decode, blob hash,
 * kernels, SomeGather encode/decode, frame sealing and checking with mbed TLS) and keeps every
 * part of it linked for `cats size`.
 *
 * With CATS_M4_REPLAY (cats_m4_node_swarm_qemu.elf) the link is the swarm instead: every
 * ColumnFrame the other nodes sent to this node in a loss-free run of the host swarm on the
 * same input (recorded by `python -m cats.sim.m4profile --swarm`, linked in as
 * cats_replay_frames) is handed to the runner once the node has reached that frame's
 * exchange, and what the node sends goes nowhere: the node computes exactly what it computes
 * in the swarm, so its instruction count is that of a loss-free swarm inference.
 *
 * With CATS_M4_QEMU (cats_m4_node_qemu.elf) it also reports over semihosting, under
 * `qemu-system-arm -machine mps2-an386 -icount shift=0`, the instructions of init and of the
 * inference (CMSDK timer 0, 40 instructions per tick: bench/kernels/m4_bench.c) and the
 * output slice. Without it (the hardware image) it touches no peripheral and sleeps after the
 * inference.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cats/cats_auth.h"
#include "cats/cats_node.h"
#include "cats/cats_port.h"
#include "cats/cats_runner.h"

#ifdef CATS_M4_QEMU
#include "semihost.h"
#define TIMER0_CTRL (*(volatile uint32_t *)0x40000000u)
#define TIMER0_VALUE (*(volatile uint32_t *)0x40000004u)
#define TIMER0_RELOAD (*(volatile uint32_t *)0x40000008u)
#endif

#ifndef CATS_ARENA_SIZE
#define CATS_ARENA_SIZE (32 * 1024)
#endif
#ifndef CATS_INPUT_LEN
#define CATS_INPUT_LEN 512
#endif
#define LOOPBACK_FRAMES 4

extern const uint8_t cats_partition_blob[];
extern const uint32_t cats_partition_blob_len;
extern const uint8_t cats_partition_manifest[];
extern const uint32_t cats_partition_manifest_len;

/* The node's whole memory plan (activations, receive buffers, decoded manifest tables). */
static uint8_t cats_arena[CATS_ARENA_SIZE] __attribute__((aligned(8)));
static int8_t cats_input[CATS_INPUT_LEN];
static struct cats_runner cats_runner_state;
static struct cats_auth cats_auth_state;
/* A fixed key: this image measures size and cost, it joins no swarm (cats.sim.m4profile
 * seals the replayed frames with the same bytes: M4_KEY). */
static const uint8_t cats_key[CATS_AUTH_KEY_LEN] = {0x43, 0x41, 0x54, 0x53, 0x2d, 0x6d, 0x34,
						     0x2d, 0x6b, 0x65, 0x79, 0x00, 0x01, 0x02,
						     0x03, 0x04};

/* Loopback link: a small ring of frames; recv() returns what send() put in. */
struct loopback {
	uint8_t frame[LOOPBACK_FRAMES][CATS_SG_FRAME_MAX];
	uint16_t len[LOOPBACK_FRAMES];
	uint16_t head, count;
};
static struct loopback cats_loopback_frames;

static int loop_send(void *ctx, const uint8_t *frame, size_t len)
{
	struct loopback *lb = ctx;
	uint16_t slot;

	if (len > CATS_SG_FRAME_MAX) {
		return -22; /* EINVAL */
	}
	if (lb->count == LOOPBACK_FRAMES) { /* full: drop the oldest, like a busy medium */
		lb->head = (uint16_t)((lb->head + 1) % LOOPBACK_FRAMES);
		lb->count--;
	}
	slot = (uint16_t)((lb->head + lb->count) % LOOPBACK_FRAMES);
	memcpy(lb->frame[slot], frame, len);
	lb->len[slot] = (uint16_t)len;
	lb->count++;
	return 0;
}

static int loop_recv(void *ctx, uint8_t *buf, size_t cap, uint16_t *src)
{
	struct loopback *lb = ctx;
	uint16_t len;

	if (lb->count == 0) {
		return 0;
	}
	*src = CATS_NODE_ID; /* our own frames */
	len = lb->len[lb->head];
	if (len > cap) {
		len = (uint16_t)cap;
	}
	memcpy(buf, lb->frame[lb->head], len);
	lb->head = (uint16_t)((lb->head + 1) % LOOPBACK_FRAMES);
	lb->count--;
	return len;
}

#ifdef CATS_M4_REPLAY
/* Recorded frames: u32 inference id, u32 count, then per frame u8 length, u8 exchange,
 * u8 link source station, the sealed frame (sealed by the host swarm with cats_key). */
extern const uint8_t cats_replay_frames[];
static struct cats_node *replay_node;
static uint32_t replay_off = 8, replay_left, replay_sent;

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int replay_send(void *ctx, const uint8_t *frame, size_t len)
{
	(void)ctx;
	(void)frame;
	(void)len;
	replay_sent++;
	return 0;
}

static int replay_recv(void *ctx, uint8_t *buf, size_t cap, uint16_t *src)
{
	const uint8_t *r = &cats_replay_frames[replay_off];
	uint16_t len;

	(void)ctx;
	if (replay_left == 0 || (int)r[1] > cats_node_current_exchange(replay_node)) {
		return 0;
	}
	*src = r[2];
	len = r[0];
	if (len > cap) {
		len = (uint16_t)cap;
	}
	memcpy(buf, &r[3], len);
	replay_off += 3u + r[0];
	replay_left--;
	return len;
}
#endif

/* No clock on this bare image: every call is one "millisecond", so an exchange waits
 * exchange_timeout_ms polls for the silent neighbours and then closes. */
static uint32_t fake_ms;
static uint32_t now_ms(void *ctx)
{
	(void)ctx;
	return fake_ms++;
}

static void log_line(void *ctx, enum cats_log_level level, const char *msg)
{
	(void)ctx;
	(void)level;
#ifdef CATS_M4_QEMU
	semihost_puts(msg);
	semihost_puts("\n");
#else
	(void)msg;
#endif
}

static const struct cats_port port = {
	.now_ms = now_ms,
	.log = log_line,
	.ctx = NULL,
	.link = {
		.ctx = &cats_loopback_frames,
		.mtu = 115, /* IEEE 802.15.4: 127 - MHR 9 - FCS 2 - AirType 1 (cats.wire.phy) */
#ifdef CATS_M4_REPLAY
		.send = replay_send,
		.recv = replay_recv,
#else
		.send = loop_send,
		.recv = loop_recv,
#endif
	},
};

#ifdef CATS_M4_QEMU
static char line[160];
#define REPORT(...)                                                                         \
	do {                                                                                \
		snprintf(line, sizeof(line), __VA_ARGS__);                                  \
		semihost_puts(line);                                                        \
	} while (0)
#else
#define REPORT(...) ((void)0)
#endif

/* Deterministic input (a slow sine-like ramp), the same as tests/test_m4.py computes. */
static void make_input(void)
{
	for (int i = 0; i < CATS_INPUT_LEN; i++) {
		int v = (i * 37) % 255 - 127;
		cats_input[i] = (int8_t)(v / 2);
	}
}

int main(void)
{
	struct cats_node *node = NULL;
	size_t needed = 0;
	int rc;
#ifdef CATS_M4_QEMU
	uint32_t t0, t1, t2;

	TIMER0_CTRL = 0;
	TIMER0_RELOAD = 0xFFFFFFFFu;
	TIMER0_VALUE = 0xFFFFFFFFu;
	TIMER0_CTRL = 1u;
	t0 = TIMER0_VALUE;
#endif
	rc = cats_node_init(&node, cats_partition_manifest, cats_partition_manifest_len,
			    cats_partition_blob, cats_partition_blob_len, cats_arena,
			    sizeof(cats_arena), &needed);
	if (rc != CATS_OK) {
		REPORT("init failed: %d (%s), arena needed %lu of %lu\n", rc, cats_strerror(rc),
		       (unsigned long)needed, (unsigned long)sizeof(cats_arena));
		return 1;
	}
#ifdef CATS_M4_QEMU
	t1 = TIMER0_VALUE;
#endif
	make_input();
	rc = cats_auth_init(&cats_auth_state, cats_key, CATS_AUTH_MIC_DEFAULT,
			    cats_sg_partition_tag(node), cats_node_id(node), cats_node_count(node));
	if (rc != CATS_OK) {
		REPORT("auth init failed: %d\n", rc);
		return 1;
	}
#ifdef CATS_M4_REPLAY
	/* every poll is a "millisecond": room for all frames of an exchange (the swarm closes
	 * an exchange when its columns are complete, never by this deadline) */
	cats_runner_init(&cats_runner_state, node, &port, &cats_auth_state, 1000000u);
	replay_node = node;
	replay_left = rd32(&cats_replay_frames[4]);
	rc = cats_runner_infer(&cats_runner_state, rd32(cats_replay_frames), cats_input,
			       sizeof(cats_input));
#else
	cats_runner_init(&cats_runner_state, node, &port, &cats_auth_state, 50);
	rc = cats_runner_infer(&cats_runner_state, 1, cats_input, sizeof(cats_input));
#endif
#ifdef CATS_M4_QEMU
	t2 = TIMER0_VALUE;
#endif
	if (rc != CATS_OK) {
		REPORT("inference failed: %d (%s)\n", rc, cats_strerror(rc));
		return 2;
	}
	uint16_t start = 0, count = 0;
	const int8_t *y = cats_node_output(node, &start, &count);

	REPORT("node %u of %u, arena %lu bytes used of %lu\n", (unsigned)cats_node_id(node),
	       (unsigned)cats_node_count(node), (unsigned long)cats_node_arena_needed(
		       cats_partition_manifest, cats_partition_manifest_len),
	       (unsigned long)sizeof(cats_arena));
	REPORT("insn init %lu infer %lu\n", (unsigned long)((t0 - t1) * 40u),
	       (unsigned long)((t1 - t2) * 40u));
	REPORT("frames sent %lu rejected_self %lu lost %lu\n",
	       (unsigned long)cats_runner_state.stats.frames_sent,
	       (unsigned long)cats_auth_state.stats.rejected_sender,
	       (unsigned long)cats_runner_state.stats.columns_lost);
	REPORT("output %u %u", (unsigned)start, (unsigned)count);
	for (uint16_t i = 0; y != NULL && i < count; i++) {
		REPORT(" %d", y[i]);
	}
	REPORT("\n");
#ifndef CATS_M4_QEMU
	(void)y;
	for (;;) {
		__asm__ volatile("wfi");
	}
#endif
	return 0;
}
