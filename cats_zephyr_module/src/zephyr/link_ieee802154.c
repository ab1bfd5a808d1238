/*
 * IEEE 802.15.4 link: ColumnFrames as the payload of broadcast data frames.
 *
 * Which Zephyr API, and why: Zephyr offers three ways to put raw frames on an 802.15.4 radio:
 *  (a) the radio driver API (struct ieee802154_radio_api: start / set_channel / tx) used
 *      directly with CONFIG_IEEE802154_RAW_MODE, where the application must also provide
 *      net_recv_data() and build every MAC header itself (what samples/net/wpan_serial does);
 *  (b) OpenThread (CONFIG_NET_L2_OPENTHREAD), a full Thread stack with its own framing; and
 *  (c) the native IEEE 802.15.4 L2 (CONFIG_NET_L2_IEEE802154) with packet sockets:
 *      AF_PACKET + SOCK_DGRAM + ETH_P_IEEE802154, the documented L2 socket interface
 *      (tests/net/ieee802154/l2 test_sending_broadcast_dgram_pkt / dgram reception), where the
 *      L2 builds and parses the MAC header, the driver adds the FCS and filters by PAN.
 * This file uses (c): the L2 owns channel, PAN id and addressing (set through net_mgmt
 * NET_REQUEST_IEEE802154_SET_*), a send is one sendto() to the broadcast short address 0xffff
 * with no ACK request, and a receive is one recv() that returns just the MAC payload (the
 * packet socket's protocol is in network byte order, htons(ETH_P_IEEE802154)). With a
 * short source address and PAN-id compression the MAC header is 9 bytes, so 127 - 9 - 2 (FCS)
 * = 116 bytes remain for the MAC payload: the radio frame of proto/cats.proto, the AirType
 * dispatch byte + the message. A node sends AIR_COLUMN + ColumnFrame (at most 115 bytes:
 * tools/cats/wire/phy.py IEEE802154.column_mtu, cats.artefacts.frames MTU_IEEE802154). A reader
 * thread queues received ColumnFrames for the runner (cats_sg_receive) and hands the other air
 * types (the gateway's InputFrames, the nodes' OutputFrames) to the role's air handler.
 *
 * Socket names: zsock_* functions; AF_PACKET / sockaddr_ll / ETH_P_IEEE802154 are Zephyr's
 * own (4.0/4.1) or the CONFIG_NET_NAMESPACE_COMPAT_MODE aliases of NET_AF_PACKET etc. (4.2+).
 */
#include <errno.h>
#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/net/ethernet.h>
#include <zephyr/net/ieee802154.h>
#include <zephyr/net/ieee802154_mgmt.h>
#include <zephyr/net/net_if.h>
#include <zephyr/net/net_mgmt.h>
#include <zephyr/net/socket.h>

#include "cats/cats_stream.h"
#include "cats_zephyr.h"

LOG_MODULE_DECLARE(cats, CONFIG_CATS_LOG_LEVEL);

/* The channel access the MAC model assumes (CONFIG_CATS_802154_CHANNEL_ACCESS) is the one the
 * L2 uses: Zephyr subsys/net/l2/ieee802154/ieee802154.c ieee802154_radio_send sends in
 * IEEE802154_TX_MODE_CSMA_CA only with CONFIG_NET_L2_IEEE802154_RADIO_CSMA_CA (and a driver
 * with IEEE802154_HW_CSMA), in IEEE802154_TX_MODE_DIRECT after the ALOHA "channel access"
 * (ieee802154_radio_aloha.c: always clear) with CONFIG_NET_L2_IEEE802154_RADIO_ALOHA.
 */
BUILD_ASSERT(IS_ENABLED(CONFIG_CATS_802154_ACCESS_DIRECT) ==
		     IS_ENABLED(CONFIG_NET_L2_IEEE802154_RADIO_ALOHA),
	     "CONFIG_CATS_802154_ACCESS_DIRECT needs CONFIG_NET_L2_IEEE802154_RADIO_ALOHA=y and "
	     "CONFIG_CATS_802154_ACCESS_CSMA the L2's CSMA-CA (conf/link_ieee802154_direct.conf)");
#ifdef CONFIG_CATS_TURN_FRAME_US /* node images; a gateway image sends its inputs alone */
BUILD_ASSERT(!IS_ENABLED(CONFIG_CATS_802154_ACCESS_DIRECT) || CONFIG_CATS_TURN_FRAME_US > 0,
	     "CONFIG_CATS_802154_ACCESS_DIRECT without CSMA-CA needs ordered turns "
	     "(CONFIG_CATS_TURN_FRAME_US > 0)");
#endif

/* MAC payload = PSDU - MHR - FCS; the ColumnFrame follows the AirType byte. */
#define CATS_802154_PAYLOAD (127 - 9 - 2)
#define CATS_802154_MTU (CATS_802154_PAYLOAD - 1)
#define CATS_802154_BROADCAST 0xffff

struct rx_frame {
	uint16_t len;
	uint16_t src; /* link source station: MAC short source address - base */
	uint8_t data[CATS_802154_MTU];
};

K_MSGQ_DEFINE(cats_154_rx_q, sizeof(struct rx_frame), CONFIG_CATS_802154_RX_QUEUE, 4);
static K_SEM_DEFINE(rx_ready, 0, 1); /* given on every queued ColumnFrame: wakes link_wait() */
static K_MUTEX_DEFINE(tx_lock);
static K_THREAD_STACK_DEFINE(rx_stack, 1536);
static struct k_thread rx_thread;
static int sock = -1;
static struct net_if *iface;
static cats_air_handler_t air_handler;
static uint16_t station_count; /* nodes: the gateway's station id */
static uint8_t tx_buf[CATS_802154_PAYLOAD]; /* AirType byte + message (tx_lock) */

static int air_send(const uint8_t *frame, size_t len)
{
	uint16_t dst = htons(CATS_802154_BROADCAST); /* big endian in sll_addr */
	struct sockaddr_ll to = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(ETH_P_IEEE802154),
		.sll_ifindex = net_if_get_by_iface(iface),
		.sll_halen = sizeof(dst),
	};
	ssize_t n;

	if (len < 1 || len > CATS_802154_PAYLOAD) {
		return -EMSGSIZE;
	}
	memcpy(to.sll_addr, &dst, sizeof(dst));
	n = zsock_sendto(sock, frame, len, 0, (const struct sockaddr *)&to, sizeof(to));
	if (n < 0) {
		return -errno;
	}
	return n == (ssize_t)len ? 0 : -EIO;
}

static int link_send(void *ctx, const uint8_t *frame, size_t len)
{
	int rc;

	ARG_UNUSED(ctx);
	if (len > CATS_802154_MTU) {
		return -EMSGSIZE;
	}
	k_mutex_lock(&tx_lock, K_FOREVER);
	tx_buf[0] = CATS_AIR_COLUMN;
	memcpy(&tx_buf[1], frame, len);
	rc = air_send(tx_buf, len + 1);
	k_mutex_unlock(&tx_lock);
	return rc;
}

/* The link source station of a received frame: its MAC short source address (big endian in
 * sll_addr, as the L2 hands it up) less the base; 0xFFFF (no station) for anything else. */
static uint16_t source_station(const struct sockaddr_ll *from)
{
	uint16_t addr;

	if (from->sll_halen != 2) {
		return 0xFFFFu;
	}
	addr = (uint16_t)(from->sll_addr[0] << 8 | from->sll_addr[1]);
	if (addr < CONFIG_CATS_802154_SHORT_ADDR_BASE ||
	    addr - CONFIG_CATS_802154_SHORT_ADDR_BASE > station_count) {
		return 0xFFFFu;
	}
	return (uint16_t)(addr - CONFIG_CATS_802154_SHORT_ADDR_BASE);
}

/* The socket's reader: ColumnFrames (without their AirType byte) are queued for the runner,
 * every other air type goes to the role's handler, empty frames are dropped. */
static void rx_loop(void *p1, void *p2, void *p3)
{
	static uint8_t buf[CATS_802154_PAYLOAD + 1]; /* + 1: an oversized payload shows */
	static struct rx_frame f;

	ARG_UNUSED(p1);
	ARG_UNUSED(p2);
	ARG_UNUSED(p3);
	for (;;) {
		struct zsock_pollfd pfd = {.fd = sock, .events = ZSOCK_POLLIN};
		struct sockaddr_ll from;
		socklen_t from_len;
		ssize_t n;

		/* Wait in poll(), then read without blocking: a packet socket's blocking recv()
		 * holds the socket's lock while it waits, and the sender's sendto() on the same
		 * socket would wait for it forever. */
		if (zsock_poll(&pfd, 1, -1) < 0) {
			LOG_ERR("802.15.4: poll: %d", errno);
			k_sleep(K_MSEC(10));
			continue;
		}
		from_len = sizeof(from);
		n = zsock_recvfrom(sock, buf, sizeof(buf), ZSOCK_MSG_DONTWAIT,
				   (struct sockaddr *)&from, &from_len);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				LOG_ERR("802.15.4: recv: %d", errno);
				k_sleep(K_MSEC(10));
			}
			continue;
		}
		if (n < 2 || n > CATS_802154_PAYLOAD) {
			continue;
		}
		f.src = source_station(&from);
		if (buf[0] != CATS_AIR_COLUMN) {
			if (air_handler != NULL) {
				air_handler(f.src, buf, (size_t)n);
			}
			continue;
		}
		f.len = (uint16_t)(n - 1);
		memcpy(f.data, &buf[1], f.len);
		if (k_msgq_put(&cats_154_rx_q, &f, K_NO_WAIT) != 0) {
			LOG_DBG("802.15.4: rx queue full, frame dropped");
		}
		k_sem_give(&rx_ready);
	}
}

static int link_recv(void *ctx, uint8_t *buf, size_t cap, uint16_t *src)
{
	struct rx_frame f;

	ARG_UNUSED(ctx);
	if (k_msgq_get(&cats_154_rx_q, &f, K_NO_WAIT) != 0) {
		return 0;
	}
	*src = f.src;
	if (f.len > cap) {
		return -EMSGSIZE;
	}
	memcpy(buf, f.data, f.len);
	return f.len;
}

static void link_wait(void *ctx, uint32_t max_ms)
{
	ARG_UNUSED(ctx);
	if (k_msgq_num_used_get(&cats_154_rx_q) == 0) {
		(void)k_sem_take(&rx_ready, K_MSEC(max_ms));
	}
}

/* net_mgmt() pastes the request *name* into a function name (net_mgmt_##request), so each
 * setting is its own call; this only logs the outcome. */
static int mgmt_result(int rc, const char *what, uint16_t value)
{
	if (rc < 0) {
		LOG_ERR("802.15.4: cannot set %s to 0x%04x: %d", what, value, rc);
	}
	return rc;
}

int cats_link_start(struct cats_zlink *zl, uint16_t station, uint16_t nodes,
		    uint32_t partition_tag, cats_air_handler_t on_air)
{
	struct sockaddr_ll bind_addr = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(ETH_P_IEEE802154),
	};
	uint16_t v;
	int rc;

	/* The gateway takes the short address after the nodes'. */
	const uint16_t short_addr =
		CONFIG_CATS_802154_SHORT_ADDR_BASE + (station == CATS_STATION_GATEWAY ? nodes : station);

	ARG_UNUSED(partition_tag);
	station_count = nodes;
	iface = net_if_get_ieee802154();
	if (iface == NULL) {
		LOG_ERR("802.15.4: no IEEE 802.15.4 interface");
		return -ENODEV;
	}
	/* Channel first: once PAN id and short address are set the L2 counts the interface as
	 * associated and refuses a channel change (-EBUSY). The L2 only accepts a short address
	 * on a PAN, so the PAN id comes before it. */
	v = CONFIG_CATS_802154_CHANNEL;
	rc = mgmt_result(net_mgmt(NET_REQUEST_IEEE802154_SET_CHANNEL, iface, &v, sizeof(v)),
			 "channel", v);
	if (rc == 0) {
		v = CONFIG_CATS_802154_PAN_ID;
		rc = mgmt_result(net_mgmt(NET_REQUEST_IEEE802154_SET_PAN_ID, iface, &v, sizeof(v)),
				 "PAN id", v);
	}
	if (rc == 0) {
		v = short_addr;
		rc = mgmt_result(
			net_mgmt(NET_REQUEST_IEEE802154_SET_SHORT_ADDR, iface, &v, sizeof(v)),
			"short address", v);
	}
	if (rc < 0) {
		return rc;
	}
	rc = net_if_up(iface);
	if (rc < 0 && rc != -EALREADY) {
		LOG_ERR("802.15.4: interface up failed: %d", rc);
		return rc;
	}

	sock = zsock_socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IEEE802154));
	if (sock < 0) {
		LOG_ERR("802.15.4: packet socket: %d", errno);
		return -errno;
	}
	bind_addr.sll_ifindex = net_if_get_by_iface(iface);
	if (zsock_bind(sock, (const struct sockaddr *)&bind_addr, sizeof(bind_addr)) < 0) {
		LOG_ERR("802.15.4: bind: %d", errno);
		zsock_close(sock);
		sock = -1;
		return -errno;
	}
	zl->link.ctx = NULL;
	zl->link.mtu = CATS_802154_MTU;
	zl->link.send = link_send;
	zl->link.recv = link_recv;
	zl->wait = link_wait;
	zl->air_send = air_send;
	zl->air_mtu = CATS_802154_PAYLOAD;
	air_handler = on_air;
	k_thread_create(&rx_thread, rx_stack, K_THREAD_STACK_SIZEOF(rx_stack), rx_loop, NULL, NULL,
			NULL, K_PRIO_PREEMPT(CONFIG_CATS_LINK_RX_PRIORITY), 0, K_NO_WAIT);
	k_thread_name_set(&rx_thread, "cats_154_rx");
	LOG_INF("802.15.4: channel %d, PAN 0x%04x, short address 0x%04x, MTU %d",
		CONFIG_CATS_802154_CHANNEL, CONFIG_CATS_802154_PAN_ID, short_addr, CATS_802154_MTU);
	return 0;
}
