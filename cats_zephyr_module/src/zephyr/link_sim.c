/*
 * Simulation link: the node's radio is a UART to the swarm simulator's radio-medium process
 * (on native_sim a host PTY: the `cats,link-uart` chosen node, uart1 in
 * samples/node/boards/native_sim.overlay; on hardware any UART). The medium decides which
 * node hears which frame, models airtime and loss, and writes the pcap trace.
 *
 * Byte stream framing, both directions:
 *
 *   0xCA 0x75 | type (1) | length N (2, LE) | payload (N bytes) | CRC (2, LE)
 *
 *   CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no final xor; Python:
 *   binascii.crc_hqx(data, 0xFFFF)) over type, length and payload. N <= 1024. A receiver
 *   that sees a bad CRC or an impossible length drops the bytes up to the next 0xCA 0x75.
 *
 *   type 1 FRAME   medium <-> node   one radio frame: an encoded ColumnFrame (N <= MTU)
 *   type 2 INPUT   medium  -> node   u32 inference id (LE) + tokens x patch int8 input: the
 *                                    gateway's broadcast, handed to cats_service_submit()
 *   type 3 RESULT  node    -> medium u32 inference id, i32 status (cats_status), u16 start,
 *                                    u16 count (LE), count int8 values: the output slice
 *   type 4 HELLO   node    -> medium u16 node id, u16 nodes, u32 partition tag, u16 MTU (LE),
 *                                    once when the link starts: which node is on this UART
 *
 * The UART is read by polling (uart_poll_in(), a 1 ms sleep when empty) in a small thread,
 * which works on every UART driver including native_sim's PTY; frames are queued for the
 * service thread, inputs are submitted directly.
 */
#include <errno.h>
#include <string.h>

#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/uart.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/sys/byteorder.h>

#include "cats/cats_service.h"
#include "cats/cats_somegather.h"
#include "cats_zephyr.h"

LOG_MODULE_DECLARE(cats, CONFIG_CATS_LOG_LEVEL);

#if !DT_HAS_CHOSEN(cats_link_uart)
#error "CONFIG_CATS_LINK_SIM needs a UART chosen as `cats,link-uart` (see samples/node/boards)"
#endif

#define SIM_SYNC0 0xCA
#define SIM_SYNC1 0x75
#define SIM_MAX_PAYLOAD 1024
enum sim_type { SIM_FRAME = 1, SIM_INPUT = 2, SIM_RESULT = 3, SIM_HELLO = 4 };

struct sim_frame {
	uint16_t len;
	uint8_t data[CATS_SG_FRAME_MAX];
};

static const struct device *const uart = DEVICE_DT_GET(DT_CHOSEN(cats_link_uart));
K_MSGQ_DEFINE(cats_sim_rx_q, sizeof(struct sim_frame), CONFIG_CATS_SIM_RX_QUEUE, 4);
static K_SEM_DEFINE(rx_ready, 0, 1);
static K_MUTEX_DEFINE(tx_lock);
static K_THREAD_STACK_DEFINE(sim_rx_stack, 1536);
static struct k_thread sim_rx_thread;

/* Receive state machine. */
static uint8_t rx_buf[3 + SIM_MAX_PAYLOAD + 2]; /* type, length, payload, crc */
static struct sim_frame rx_frame;

static uint16_t cats_sim_crc16(uint16_t crc, const uint8_t *p, size_t n)
{
	while (n--) {
		crc ^= (uint16_t)(*p++) << 8;
		for (int i = 0; i < 8; i++) {
			crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
		}
	}
	return crc;
}

static void put_bytes(const uint8_t *p, size_t n)
{
	while (n--) {
		uart_poll_out(uart, *p++);
	}
}

/* Send one framed message; the payload may come in two parts (header + data). */
static void sim_send(uint8_t type, const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
	uint8_t head[5] = {SIM_SYNC0, SIM_SYNC1, type, 0, 0};
	uint8_t tail[2];
	uint16_t crc;

	sys_put_le16((uint16_t)(na + nb), &head[3]);
	crc = cats_sim_crc16(0xFFFF, &head[2], 3);
	crc = cats_sim_crc16(crc, a, na);
	crc = cats_sim_crc16(crc, b, nb);
	sys_put_le16(crc, tail);
	k_mutex_lock(&tx_lock, K_FOREVER);
	put_bytes(head, sizeof(head));
	put_bytes(a, na);
	put_bytes(b, nb);
	put_bytes(tail, sizeof(tail));
	k_mutex_unlock(&tx_lock);
}

static void handle(uint8_t type, const uint8_t *p, uint16_t n)
{
	switch (type) {
	case SIM_FRAME:
		if (n == 0 || n > CATS_SG_FRAME_MAX) {
			return;
		}
		rx_frame.len = n;
		memcpy(rx_frame.data, p, n);
		if (k_msgq_put(&cats_sim_rx_q, &rx_frame, K_NO_WAIT) != 0) {
			LOG_DBG("sim: rx queue full, frame dropped");
		}
		k_sem_give(&rx_ready);
		break;
	case SIM_INPUT: {
		int rc;

		if (n < 4) {
			return;
		}
		rc = cats_service_submit(sys_get_le32(p), (const int8_t *)&p[4], n - 4u);
		if (rc != 0) {
			LOG_WRN("sim: input %u refused: %d", sys_get_le32(p), rc);
		}
		break;
	}
	default:
		LOG_DBG("sim: message type %u ignored", type);
		break;
	}
}

static void sim_rx(void *p1, void *p2, void *p3)
{
	enum { SYNC0, SYNC1, BODY } state = SYNC0;
	size_t have = 0, want = 0;

	ARG_UNUSED(p1);
	ARG_UNUSED(p2);
	ARG_UNUSED(p3);
	for (;;) {
		unsigned char c;

		if (uart_poll_in(uart, &c) != 0) {
			k_sleep(K_MSEC(1));
			continue;
		}
		switch (state) {
		case SYNC0:
			state = (c == SIM_SYNC0) ? SYNC1 : SYNC0;
			break;
		case SYNC1:
			state = (c == SIM_SYNC1) ? BODY : (c == SIM_SYNC0 ? SYNC1 : SYNC0);
			have = 0;
			want = 3; /* type + length, then the rest */
			break;
		case BODY:
			rx_buf[have++] = c;
			if (have == 3) {
				uint16_t n = sys_get_le16(&rx_buf[1]);

				if (n > SIM_MAX_PAYLOAD) {
					state = SYNC0;
					break;
				}
				want = 3u + n + 2u;
			}
			if (have == want) {
				uint16_t n = (uint16_t)(want - 5u);
				uint16_t crc = cats_sim_crc16(0xFFFF, rx_buf, 3u + n);

				if (crc == sys_get_le16(&rx_buf[3 + n])) {
					handle(rx_buf[0], &rx_buf[3], n);
				} else {
					LOG_DBG("sim: CRC error, message dropped");
				}
				state = SYNC0;
			}
			break;
		}
	}
}

static int link_send(void *ctx, const uint8_t *frame, size_t len)
{
	ARG_UNUSED(ctx);
	if (len > CONFIG_CATS_SIM_MTU) {
		return -EMSGSIZE;
	}
	sim_send(SIM_FRAME, frame, len, NULL, 0);
	return 0;
}

static int link_recv(void *ctx, uint8_t *buf, size_t cap)
{
	struct sim_frame f;

	ARG_UNUSED(ctx);
	if (k_msgq_get(&cats_sim_rx_q, &f, K_NO_WAIT) != 0) {
		return 0;
	}
	if (f.len > cap) {
		return -EMSGSIZE;
	}
	memcpy(buf, f.data, f.len);
	return f.len;
}

static void link_wait(void *ctx, uint32_t max_ms)
{
	ARG_UNUSED(ctx);
	if (k_msgq_num_used_get(&cats_sim_rx_q) == 0) {
		(void)k_sem_take(&rx_ready, K_MSEC(max_ms));
	}
}

int cats_link_start(struct cats_zlink *zl, uint16_t node_id, uint16_t nodes,
		    uint32_t partition_tag)
{
	uint8_t hello[10];

	if (!device_is_ready(uart)) {
		LOG_ERR("sim: link UART not ready");
		return -ENODEV;
	}
	k_thread_create(&sim_rx_thread, sim_rx_stack, K_THREAD_STACK_SIZEOF(sim_rx_stack),
			sim_rx, NULL, NULL, NULL, K_PRIO_PREEMPT(CONFIG_CATS_SERVICE_PRIORITY), 0,
			K_NO_WAIT);
	k_thread_name_set(&sim_rx_thread, "cats_sim_rx");

	sys_put_le16(node_id, &hello[0]);
	sys_put_le16(nodes, &hello[2]);
	sys_put_le32(partition_tag, &hello[4]);
	sys_put_le16(CONFIG_CATS_SIM_MTU, &hello[8]);
	sim_send(SIM_HELLO, hello, sizeof(hello), NULL, 0);

	zl->link.ctx = NULL;
	zl->link.mtu = CONFIG_CATS_SIM_MTU;
	zl->link.send = link_send;
	zl->link.recv = link_recv;
	zl->wait = link_wait;
	LOG_INF("sim: medium on %s, MTU %d", uart->name, CONFIG_CATS_SIM_MTU);
	return 0;
}

void cats_link_report(uint32_t inference_id, int status, uint16_t start, uint16_t count,
		      const int8_t *values)
{
	uint8_t head[12];

	sys_put_le32(inference_id, &head[0]);
	sys_put_le32((uint32_t)status, &head[4]);
	sys_put_le16(start, &head[8]);
	sys_put_le16(count, &head[10]);
	sim_send(SIM_RESULT, head, sizeof(head), (const uint8_t *)values, count);
}
