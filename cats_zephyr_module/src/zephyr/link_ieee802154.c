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
 * with no ACK request, and a receive is one recv() that returns just the MAC payload. With a
 * short source address and PAN-id compression the MAC header is 9 bytes, so 127 - 9 - 2 (FCS)
 * = 116 bytes remain for the MAC payload: the radio frame of proto/cats.proto, the AirType
 * dispatch byte + the message. A node sends AIR_COLUMN + ColumnFrame (at most 115 bytes:
 * tools/cats/sim/phy.py IEEE802154.column_mtu, cats.frames MTU_IEEE802154) and hands only
 * the ColumnFrames of AIR_COLUMN frames to the runner (cats_sg_receive); other air types (the
 * gateway's InputFrame / OutputFrame) are skipped here.
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

/* MAC payload = PSDU - MHR - FCS; the ColumnFrame follows the AirType byte. */
#define CATS_802154_PAYLOAD (127 - 9 - 2)
#define CATS_802154_MTU (CATS_802154_PAYLOAD - 1)
#define CATS_802154_BROADCAST 0xffff

static int sock = -1;
static struct net_if *iface;
static uint8_t tx_buf[CATS_802154_PAYLOAD]; /* AirType byte + ColumnFrame (service thread) */

static int link_send(void *ctx, const uint8_t *frame, size_t len)
{
	uint16_t dst = htons(CATS_802154_BROADCAST); /* big endian in sll_addr */
	struct sockaddr_ll to = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(ETH_P_IEEE802154),
		.sll_ifindex = net_if_get_by_iface(iface),
		.sll_halen = sizeof(dst),
	};
	ssize_t n;

	ARG_UNUSED(ctx);
	if (len > CATS_802154_MTU) {
		return -EMSGSIZE;
	}
	memcpy(to.sll_addr, &dst, sizeof(dst));
	tx_buf[0] = CATS_AIR_COLUMN;
	memcpy(&tx_buf[1], frame, len);
	n = zsock_sendto(sock, tx_buf, len + 1, 0, (const struct sockaddr *)&to, sizeof(to));
	if (n < 0) {
		return -errno;
	}
	return n == (ssize_t)(len + 1) ? 0 : -EIO;
}

/* The next received ColumnFrame: the MAC payload without its AirType byte (moved down in
 * buf; the runner's buffer holds any 802.15.4 MAC payload). Frames of another air type, and
 * empty ones, are skipped; 0 when nothing is waiting. */
static int link_recv(void *ctx, uint8_t *buf, size_t cap)
{
	ssize_t n;

	ARG_UNUSED(ctx);
	for (;;) {
		n = zsock_recv(sock, buf, cap, ZSOCK_MSG_DONTWAIT);
		if (n < 0) {
			return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
		}
		if (n > 1 && buf[0] == CATS_AIR_COLUMN) {
			memmove(buf, &buf[1], (size_t)n - 1);
			return (int)(n - 1);
		}
	}
}

static void link_wait(void *ctx, uint32_t max_ms)
{
	struct zsock_pollfd pfd = {.fd = sock, .events = ZSOCK_POLLIN};

	ARG_UNUSED(ctx);
	(void)zsock_poll(&pfd, 1, (int)max_ms);
}

static int mgmt_u16(uint32_t request, uint16_t value, const char *what)
{
	int rc = net_mgmt(request, iface, &value, sizeof(value));

	if (rc < 0) {
		LOG_ERR("802.15.4: cannot set %s to 0x%04x: %d", what, value, rc);
	}
	return rc;
}

int cats_link_start(struct cats_zlink *zl, uint16_t node_id, uint16_t nodes,
		    uint32_t partition_tag)
{
	struct sockaddr_ll bind_addr = {
		.sll_family = AF_PACKET,
		.sll_protocol = ETH_P_IEEE802154,
	};
	int rc;

	ARG_UNUSED(nodes);
	ARG_UNUSED(partition_tag);
	iface = net_if_get_ieee802154();
	if (iface == NULL) {
		LOG_ERR("802.15.4: no IEEE 802.15.4 interface");
		return -ENODEV;
	}
	/* PAN id first: the L2 only accepts a short address on a PAN (it "associates"). */
	rc = mgmt_u16(NET_REQUEST_IEEE802154_SET_PAN_ID, CONFIG_CATS_802154_PAN_ID, "PAN id");
	if (rc == 0) {
		rc = mgmt_u16(NET_REQUEST_IEEE802154_SET_SHORT_ADDR,
			      CONFIG_CATS_802154_SHORT_ADDR_BASE + node_id, "short address");
	}
	if (rc == 0) {
		rc = mgmt_u16(NET_REQUEST_IEEE802154_SET_CHANNEL, CONFIG_CATS_802154_CHANNEL,
			      "channel");
	}
	if (rc < 0) {
		return rc;
	}
	rc = net_if_up(iface);
	if (rc < 0 && rc != -EALREADY) {
		LOG_ERR("802.15.4: interface up failed: %d", rc);
		return rc;
	}

	sock = zsock_socket(AF_PACKET, SOCK_DGRAM, ETH_P_IEEE802154);
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
	LOG_INF("802.15.4: channel %d, PAN 0x%04x, short address 0x%04x, MTU %d",
		CONFIG_CATS_802154_CHANNEL, CONFIG_CATS_802154_PAN_ID,
		CONFIG_CATS_802154_SHORT_ADDR_BASE + node_id, CATS_802154_MTU);
	return 0;
}

void cats_link_report(const struct cats_service_result *res)
{
	/* The gateway collects output slices through its own protocol (not over this link). */
	ARG_UNUSED(res);
}
