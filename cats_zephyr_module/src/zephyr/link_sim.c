/*
 * Simulation link: the node's radio is a UART to the swarm simulator's radio-medium process
 * (on native_sim a host PTY: the `cats,link-uart` chosen node, uart1 in
 * samples/node/boards/native_sim.overlay; on hardware any UART). The medium decides which
 * node hears which frame, models airtime and loss, and writes the pcap trace.
 *
 * The UART carries the framed byte stream of proto/cats.proto (cats/cats_stream.h, the one
 * implementation in src/core/stream.c), both directions:
 *
 *   type 1 AIR       medium <-> node   one radio frame: the AirType byte + a message:
 *                                      AIR_COLUMN + ColumnFrame (both ways; the ColumnFrame is
 *                                      at most CONFIG_CATS_SIM_MTU bytes), AIR_INPUT +
 *                                      InputFrame / AIR_OUTPUT + OutputFrame (the gateway
 *                                      protocol: to and from the role's air handler)
 *   type 2 HELLO     node  -> medium   SimHello {node id, nodes, partition tag, MTU}, once
 *   type 3 SLOT_END  medium -> node    SlotEnd: the exchange's slot is over; handed to the
 *                                      runner as recv() == CATS_LINK_SLOT_END (cats_port.h)
 *
 * The UART is read by polling (uart_poll_in(), a 1 ms sleep when empty) in a small thread,
 * which works on every UART driver including native_sim's PTY; ColumnFrames and slot ends are
 * queued in order for the service thread, other radio frames go to the air handler at once.
 */
#include <errno.h>
#include <string.h>

#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/uart.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>

#include <pb_decode.h>
#include <pb_encode.h>

#include "cats.pb.h"
#include "cats/cats_service.h"
#include "cats/cats_somegather.h"
#include "cats/cats_stream.h"
#include "cats_zephyr.h"

LOG_MODULE_DECLARE(cats, CONFIG_CATS_LOG_LEVEL);

#if !DT_HAS_CHOSEN(cats_link_uart)
#error "CONFIG_CATS_LINK_SIM needs a UART chosen as `cats,link-uart` (see samples/node/boards)"
#endif

struct sim_item {
	uint8_t slot_end; /* 1: data holds CATS_LINK_SLOT_END_LEN bytes of a slot end */
	uint8_t src;      /* link source station (the medium's stamp) */
	uint16_t len;
	/* Inputs submitted before it arrived: a slot end that arrived before the running
	 * inference's input was submitted belongs to an earlier inference even with the same id
	 * (a restarted gateway numbers from 1 again) and is dropped. */
	uint32_t gen;
	uint8_t data[CATS_SG_FRAME_MAX];
};

static const struct device *const uart = DEVICE_DT_GET(DT_CHOSEN(cats_link_uart));
K_MSGQ_DEFINE(cats_sim_rx_q, sizeof(struct sim_item), CONFIG_CATS_SIM_RX_QUEUE, 4);
static K_SEM_DEFINE(rx_ready, 0, 1);
static K_MUTEX_DEFINE(tx_lock);
static K_THREAD_STACK_DEFINE(sim_rx_stack, 2048);
static struct k_thread sim_rx_thread;

/* Receive side (the rx thread only). */
static uint8_t rx_buf[CATS_STREAM_SIM_MAX_LEN + CATS_STREAM_OVERHEAD];
static struct cats_stream_decoder rx_dec;
static struct sim_item rx_item;
static cats_air_handler_t air_handler;

static void put_bytes(const uint8_t *p, size_t n)
{
	while (n--) {
		uart_poll_out(uart, *p++);
	}
}

/* Send one framed message; the payload may come in two parts (e.g. AirType byte + message). */
static void sim_send(uint8_t type, const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
	uint8_t head[CATS_STREAM_HEADER];
	uint8_t tail[2];
	uint16_t crc = cats_stream_header(type, (uint16_t)(na + nb), head);

	crc = cats_stream_crc16(crc, a, na);
	crc = cats_stream_crc16(crc, b, nb);
	tail[0] = (uint8_t)(crc & 0xFF);
	tail[1] = (uint8_t)(crc >> 8);
	k_mutex_lock(&tx_lock, K_FOREVER);
	put_bytes(head, sizeof(head));
	put_bytes(a, na);
	put_bytes(b, nb);
	put_bytes(tail, sizeof(tail));
	k_mutex_unlock(&tx_lock);
}

static void queue_item(void)
{
	rx_item.gen = cats_service_inputs();
	if (k_msgq_put(&cats_sim_rx_q, &rx_item, K_NO_WAIT) != 0) {
		LOG_WRN("sim: rx queue full, %s dropped", rx_item.slot_end ? "slot end" : "frame");
	}
	k_sem_give(&rx_ready);
}

static void handle(const struct cats_stream_msg *m)
{
	switch (m->type) {
	case CATS_STREAM_AIR: /* link source station | AirType | message + MIC */
		if (m->len < 2) {
			return;
		}
		if (m->payload[1] == CATS_AIR_COLUMN) {
			if (m->len - 2u > CATS_SG_FRAME_MAX) {
				return;
			}
			rx_item.slot_end = 0;
			rx_item.src = m->payload[0];
			rx_item.len = m->len - 2u;
			memcpy(rx_item.data, &m->payload[2], rx_item.len);
			queue_item();
		} else if (air_handler != NULL) {
			air_handler(m->payload[0], &m->payload[1], m->len - 1u);
		}
		break;
	case CATS_STREAM_SLOT_END: {
		cats_SlotEnd se = cats_SlotEnd_init_zero;
		pb_istream_t is = pb_istream_from_buffer(m->payload, m->len);

		if (!pb_decode(&is, cats_SlotEnd_fields, &se)) {
			return;
		}
		rx_item.slot_end = 1;
		rx_item.len = CATS_LINK_SLOT_END_LEN;
		cats_link_slot_end_put(rx_item.data, se.inference_id, se.exchange);
		queue_item();
		break;
	}
	default:
		LOG_DBG("sim: message type %u ignored", m->type);
		break;
	}
}

static void sim_rx(void *p1, void *p2, void *p3)
{
	ARG_UNUSED(p1);
	ARG_UNUSED(p2);
	ARG_UNUSED(p3);
	cats_stream_decoder_init(&rx_dec, rx_buf, sizeof(rx_buf));
	for (;;) {
		unsigned char c;
		const uint8_t *p = &c;
		size_t left = 1, used;
		struct cats_stream_msg m;
		uint32_t bad = rx_dec.bad_crc + rx_dec.bad_length;

		if (uart_poll_in(uart, &c) != 0) {
			k_sleep(K_MSEC(1));
			continue;
		}
		/* One byte may complete a message, and a resync may leave another one held. */
		while (cats_stream_decode(&rx_dec, p, left, &used, &m)) {
			p += used;
			left -= used;
			handle(&m);
		}
		if (rx_dec.bad_crc + rx_dec.bad_length != bad) {
			LOG_DBG("sim: corrupt message dropped");
		}
	}
}

static int link_send(void *ctx, const uint8_t *frame, size_t len)
{
	const uint8_t air = CATS_AIR_COLUMN;

	ARG_UNUSED(ctx);
	if (len > CONFIG_CATS_SIM_MTU) {
		return -EMSGSIZE;
	}
	sim_send(CATS_STREAM_AIR, &air, 1, frame, len);
	return 0;
}

static int air_send(const uint8_t *frame, size_t len)
{
	if (len < 1 || len > 1u + CONFIG_CATS_SIM_MTU) {
		return -EMSGSIZE;
	}
	sim_send(CATS_STREAM_AIR, frame, len, NULL, 0);
	return 0;
}

static int link_recv(void *ctx, uint8_t *buf, size_t cap, uint16_t *src)
{
	struct sim_item it;

	ARG_UNUSED(ctx);
	do {
		if (k_msgq_get(&cats_sim_rx_q, &it, K_NO_WAIT) != 0) {
			return 0;
		}
	} while (it.slot_end && it.gen < cats_service_inputs());
	if (it.len > cap) {
		return -EMSGSIZE;
	}
	memcpy(buf, it.data, it.len);
	if (!it.slot_end) {
		*src = it.src;
	}
	return it.slot_end ? CATS_LINK_SLOT_END : it.len;
}

static void link_wait(void *ctx, uint32_t max_ms)
{
	ARG_UNUSED(ctx);
	if (k_msgq_num_used_get(&cats_sim_rx_q) == 0) {
		(void)k_sem_take(&rx_ready, K_MSEC(max_ms));
	}
}

int cats_link_start(struct cats_zlink *zl, uint16_t station, uint16_t nodes,
		    uint32_t partition_tag, cats_air_handler_t on_air)
{
	cats_SimHello hello = cats_SimHello_init_zero;
	uint8_t hb[cats_SimHello_size];
	pb_ostream_t os = pb_ostream_from_buffer(hb, sizeof(hb));

	if (!device_is_ready(uart)) {
		LOG_ERR("sim: link UART not ready");
		return -ENODEV;
	}
	air_handler = on_air;
	k_thread_create(&sim_rx_thread, sim_rx_stack, K_THREAD_STACK_SIZEOF(sim_rx_stack),
			sim_rx, NULL, NULL, NULL, K_PRIO_PREEMPT(CONFIG_CATS_SERVICE_PRIORITY), 0,
			K_NO_WAIT);
	k_thread_name_set(&sim_rx_thread, "cats_sim_rx");

	hello.node_id = station == CATS_STATION_GATEWAY ? -1 : (int32_t)station;
	hello.nodes = nodes;
	hello.partition_tag = partition_tag;
	hello.mtu = CONFIG_CATS_SIM_MTU;
	if (!pb_encode(&os, cats_SimHello_fields, &hello)) {
		return -EINVAL;
	}
	sim_send(CATS_STREAM_HELLO, hb, os.bytes_written, NULL, 0);

	zl->link.ctx = NULL;
	zl->link.mtu = CONFIG_CATS_SIM_MTU;
	zl->link.send = link_send;
	zl->link.recv = link_recv;
	zl->wait = link_wait;
	zl->air_send = air_send;
	zl->air_mtu = 1u + CONFIG_CATS_SIM_MTU;
	LOG_INF("sim: medium on %s, MTU %d", uart->name, CONFIG_CATS_SIM_MTU);
	return 0;
}
