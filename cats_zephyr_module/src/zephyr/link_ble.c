/*
 * BLE link: ColumnFrames as manufacturer-specific data of extended advertisements.
 *
 * Sending: one non-connectable, non-scannable extended advertising set
 * (BT_LE_ADV_OPT_EXT_ADV without CONN/SCANNABLE; ADV_EXT_IND on the 1M primary channels
 * pointing to one AUX_ADV_IND on the 2M secondary PHY, the default for extended advertising).
 * Each frame: bt_le_ext_adv_set_data() with one AD structure [len, 0xFF, company id (2, LE),
 * radio frame], then bt_le_ext_adv_start() for CONFIG_CATS_BLE_ADV_EVENTS advertising events;
 * the set's `sent` callback releases the next frame, so send() blocks while the previous
 * frame is still on the air. AUX_ADV_IND carries at most 255 bytes: 10 of extended header and
 * 4 of AD header leave 241 bytes for the radio frame of proto/cats.proto, the AirType dispatch
 * byte + the message: AIR_COLUMN + a ColumnFrame of at most 240 bytes (tools/cats/wire/phy.py
 * BLE2M.column_mtu, cats.artefacts.frames MTU_BLE2M). The controller (LL split) holds more than 191
 * bytes of advertising data only with CONFIG_BT_CTLR_ADV_DATA_CHAIN, and it sends them as an
 * AUX_ADV_IND of 191 bytes (ll_sw/pdu.h PDU_AC_EXT_AD_DATA_LEN_MAX) and an AUX_CHAIN_IND with
 * the rest, T_MAFS later (seen in the BabbleSim phy's dump; cats.wire.phy models it).
 *
 * One advertising event per frame (CONFIG_CATS_BLE_ADV_EVENTS): the next node in the ordered
 * turns starts as soon as it has this node's last frame, and a repeat of that frame would
 * collide with its first one, event after event (same interval). While its own frame is on
 * the air the node does not scan: the controller's continuous scan window would otherwise
 * take the radio from the set, skipping and delaying its events (the set counts skipped
 * events as sent); by the turn order nobody else sends meanwhile.
 *
 * Receiving: continuous passive scanning (bt_le_scan_start, window = interval; with
 * CONFIG_BT_EXT_ADV the host uses the LE extended scan commands and the controller follows
 * the AUX pointers onto the 2M PHY; BT_LE_SCAN_OPT_CODED would add the coded PHY, and
 * duplicate filtering stays off because consecutive frames may repeat data). The bt_le_scan_cb
 * `recv` callback (BT RX thread) keeps extended advertisements whose manufacturer data carry
 * our company id and a radio frame: an AIR_COLUMN frame's ColumnFrame (without the AirType
 * byte) is queued for the service thread (k_msgq), other air types (the gateway's InputFrames,
 * the nodes' OutputFrames) go to the role's air handler; the partition tag inside every frame
 * filters other swarms. The link source station is the advertiser's address: every station
 * advertises from its own static random identity C0:CA:75:00:hi:lo (set by bt_id_create()
 * before bt_enable()), as 802.15.4 stations from their MAC short address.
 */
#include <errno.h>
#include <string.h>

#include <zephyr/bluetooth/bluetooth.h>
#include <zephyr/bluetooth/gap.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/sys/byteorder.h>

#include "cats/cats_somegather.h"
#include "cats/cats_stream.h"
#include "cats_zephyr.h"

LOG_MODULE_DECLARE(cats, CONFIG_CATS_LOG_LEVEL);

/* AdvData of one AUX_ADV_IND less the AD header: the radio frame; the ColumnFrame follows
 * its AirType byte. */
#define CATS_BLE_PAYLOAD (255 - 10 - 4)
#define CATS_BLE_MTU (CATS_BLE_PAYLOAD - 1)
#define CATS_BLE_AD_PREFIX 3 /* company id (2) + AirType (1) in the manufacturer data */
#define CATS_BLE_SEND_TIMEOUT_MS 500

struct ble_frame {
	uint16_t len;
	uint16_t src;			/* link source station: from the advertiser's address */
	uint8_t data[CATS_BLE_PAYLOAD]; /* AirType byte + message */
};

K_MSGQ_DEFINE(cats_ble_rx_q, sizeof(struct ble_frame), CONFIG_CATS_BLE_RX_QUEUE, 4);
static K_SEM_DEFINE(adv_done, 1, 1);
static K_SEM_DEFINE(rx_ready, 0, 1); /* given on every queued frame: wakes link_wait() */
static struct bt_le_ext_adv *adv;
static K_MUTEX_DEFINE(tx_lock);
static uint8_t adv_buf[CATS_BLE_AD_PREFIX + CATS_BLE_MTU]; /* tx_lock */
static struct ble_frame rx_tmp;
static cats_air_handler_t air_handler;
static uint16_t station_count; /* nodes: the gateway's station id */

/* Every station advertises from its own static random identity address C0:CA:75:00:hi:lo
 * (station 0xFFFF: the gateway), the AdvA of cats.wire.phy.Ble2M.psdu, so a receiver knows
 * the link source the way 802.15.4 knows it from the MAC source address: ColumnFrames name
 * no sender, and the MIC's nonce binds this station. */
static const uint8_t swarm_prefix[4] = {0x00, 0x75, 0xCA, 0xC0}; /* a.val[2..5] */

static void station_address(bt_addr_le_t *addr, uint16_t station)
{
	addr->type = BT_ADDR_LE_RANDOM;
	addr->a.val[0] = (uint8_t)(station & 0xFFu);
	addr->a.val[1] = (uint8_t)(station >> 8);
	memcpy(&addr->a.val[2], swarm_prefix, sizeof(swarm_prefix));
}

/* The link source station of an advertisement: node d (0 .. nodes-1), the gateway (nodes),
 * or 0xFFFF (no station of this swarm's address range; authentication rejects it). */
static uint16_t source_station(const bt_addr_le_t *addr)
{
	uint16_t sid;

	if (addr == NULL || addr->type != BT_ADDR_LE_RANDOM ||
	    memcmp(&addr->a.val[2], swarm_prefix, sizeof(swarm_prefix)) != 0) {
		return 0xFFFFu;
	}
	sid = sys_get_le16(addr->a.val);
	if (sid == CATS_STATION_GATEWAY) {
		return station_count;
	}
	return sid < station_count ? sid : 0xFFFFu;
}

/* The scanner is paused while this node's own frame is on the air (the controller's
 * continuous scan otherwise preempts the set's advertising events) and resumed from the system
 * work queue once the set is idle. The host sends its HCI commands from that queue too, so
 * the work never blocks on tx_lock (a sender holding it waits for a command: deadlock); while
 * a sender holds it, the work retries a moment later. */
static bool scanning; /* tx_lock */
static int scan_on(void);
static void scan_resume(struct k_work *work)
{
	if (k_mutex_lock(&tx_lock, K_NO_WAIT) != 0) {
		(void)k_work_schedule(k_work_delayable_from_work(work), K_MSEC(1));
		return;
	}
	if (!scanning && k_sem_count_get(&adv_done) > 0) {
		(void)scan_on();
	}
	k_mutex_unlock(&tx_lock);
}
static K_WORK_DELAYABLE_DEFINE(scan_resume_work, scan_resume);

static void adv_sent(struct bt_le_ext_adv *set, struct bt_le_ext_adv_sent_info *info)
{
	ARG_UNUSED(set);
	LOG_DBG("ble: frame advertised (%u events)", info->num_sent);
	k_sem_give(&adv_done);
	(void)k_work_schedule(&scan_resume_work, K_NO_WAIT);
}

static const struct bt_le_ext_adv_cb adv_callbacks = {
	.sent = adv_sent,
};

/* One radio frame (AirType byte + message) as the manufacturer data of the advertising set;
 * the caller holds tx_lock. */
static int adv_frame(const uint8_t *air, size_t len)
{
	struct bt_data ad;
	int rc;

	/* The previous frame must have had its advertising events. */
	if (k_sem_take(&adv_done, K_MSEC(CATS_BLE_SEND_TIMEOUT_MS)) != 0) {
		LOG_WRN("ble: frame still on the air after %d ms, stopped", CATS_BLE_SEND_TIMEOUT_MS);
		(void)bt_le_ext_adv_stop(adv);
	}
	sys_put_le16(CONFIG_CATS_BLE_COMPANY_ID, adv_buf);
	if (air != &adv_buf[2]) {
		memcpy(&adv_buf[2], air, len);
	}
	ad.type = BT_DATA_MANUFACTURER_DATA;
	ad.data_len = (uint8_t)(2 + len);
	ad.data = adv_buf;
	if (scanning) {
		rc = bt_le_scan_stop();
		if (rc != 0) {
			LOG_WRN("ble: bt_le_scan_stop: %d", rc);
		}
		scanning = false;
	}
	rc = bt_le_ext_adv_set_data(adv, &ad, 1, NULL, 0);
	if (rc == 0) {
		rc = bt_le_ext_adv_start(adv,
					 BT_LE_EXT_ADV_START_PARAM(0, CONFIG_CATS_BLE_ADV_EVENTS));
	}
	if (rc != 0) {
		k_sem_give(&adv_done);
		(void)k_work_schedule(&scan_resume_work, K_NO_WAIT);
	}
	LOG_DBG("ble: air type %u, %zu bytes: %d", air[0], len, rc);
	return rc;
}

static int air_send(const uint8_t *frame, size_t len)
{
	int rc;

	if (len < 1 || len > CATS_BLE_PAYLOAD) {
		return -EMSGSIZE;
	}
	k_mutex_lock(&tx_lock, K_FOREVER);
	rc = adv_frame(frame, len);
	k_mutex_unlock(&tx_lock);
	return rc;
}

static int link_send(void *ctx, const uint8_t *frame, size_t len)
{
	int rc;

	ARG_UNUSED(ctx);
	if (len > CATS_BLE_MTU) {
		return -EMSGSIZE;
	}
	k_mutex_lock(&tx_lock, K_FOREVER);
	adv_buf[2] = CATS_AIR_COLUMN;
	memcpy(&adv_buf[CATS_BLE_AD_PREFIX], frame, len);
	rc = adv_frame(&adv_buf[2], len + 1);
	k_mutex_unlock(&tx_lock);
	return rc;
}

static int link_recv(void *ctx, uint8_t *buf, size_t cap, uint16_t *src)
{
	struct ble_frame f;

	ARG_UNUSED(ctx);
	if (k_msgq_get(&cats_ble_rx_q, &f, K_NO_WAIT) != 0) {
		return 0;
	}
	*src = f.src;
	if (f.len - 1u > cap) {
		return -EMSGSIZE;
	}
	memcpy(buf, &f.data[1], f.len - 1u);
	return f.len - 1;
}

static void link_wait(void *ctx, uint32_t max_ms)
{
	ARG_UNUSED(ctx);
	if (k_msgq_num_used_get(&cats_ble_rx_q) == 0) {
		(void)k_sem_take(&rx_ready, K_MSEC(max_ms));
	}
}

/* bt_data_parse() callback: pick our manufacturer data carrying a radio frame (AirType byte
 * and at least one more) out of an advertisement. */
static bool parse_ad(struct bt_data *data, void *user)
{
	bool *found = user;

	if (data->type != BT_DATA_MANUFACTURER_DATA || data->data_len <= CATS_BLE_AD_PREFIX ||
	    data->data_len - 2u > CATS_BLE_PAYLOAD ||
	    sys_get_le16(data->data) != CONFIG_CATS_BLE_COMPANY_ID) {
		return true; /* keep looking */
	}
	rx_tmp.len = data->data_len - 2u;
	memcpy(rx_tmp.data, &data->data[2], rx_tmp.len);
	*found = true;
	return false;
}

static void scan_recv(const struct bt_le_scan_recv_info *info, struct net_buf_simple *buf)
{
	bool found = false;

	if (!(info->adv_props & BT_GAP_ADV_PROP_EXT_ADV)) {
		return; /* legacy advertising is not ours */
	}
	bt_data_parse(buf, parse_ad, &found);
	if (!found) {
		return;
	}
	rx_tmp.src = source_station(info->addr);
	LOG_DBG("ble: air type %u, %u bytes from station %u", rx_tmp.data[0], rx_tmp.len,
		rx_tmp.src);
	if (rx_tmp.data[0] != CATS_AIR_COLUMN) {
		if (air_handler != NULL) {
			air_handler(rx_tmp.src, rx_tmp.data, rx_tmp.len);
		}
		return;
	}
	if (k_msgq_put(&cats_ble_rx_q, &rx_tmp, K_NO_WAIT) != 0) {
		LOG_DBG("ble: rx queue full, frame dropped");
	}
	k_sem_give(&rx_ready);
}

static struct bt_le_scan_cb scan_callbacks = {
	.recv = scan_recv,
};

/* Continuous passive scanning; the caller holds tx_lock. */
static int scan_on(void)
{
	static const struct bt_le_scan_param scan_param = {
		.type = BT_LE_SCAN_TYPE_PASSIVE,
		.options = BT_LE_SCAN_OPT_NONE,
		.interval = BT_GAP_SCAN_FAST_INTERVAL,
		.window = BT_GAP_SCAN_FAST_INTERVAL,
	};
	int rc = bt_le_scan_start(&scan_param, NULL);

	if (rc != 0) {
		LOG_ERR("ble: bt_le_scan_start: %d", rc);
		return rc;
	}
	scanning = true;
	return 0;
}

int cats_link_start(struct cats_zlink *zl, uint16_t station, uint16_t nodes,
		    uint32_t partition_tag, cats_air_handler_t on_air)
{
	/* 20 ms: the shortest interval for non-connectable advertising (only matters when
	 * CONFIG_CATS_BLE_ADV_EVENTS > 1). The identity address: without it the host programs a
	 * fresh private address before every start, i.e. every frame. */
	const struct bt_le_adv_param adv_param = BT_LE_ADV_PARAM_INIT(
		BT_LE_ADV_OPT_EXT_ADV | BT_LE_ADV_OPT_USE_IDENTITY, 0x20, 0x20, NULL);
	bt_addr_le_t identity;
	int rc;

	ARG_UNUSED(partition_tag);
	air_handler = on_air;
	station_count = nodes;
	/* Before bt_enable(): the one identity of this device becomes the station's address. */
	station_address(&identity, station);
	rc = bt_id_create(&identity, NULL);
	if (rc < 0) {
		LOG_ERR("ble: bt_id_create (station address): %d", rc);
		return rc;
	}
	rc = bt_enable(NULL);
	if (rc != 0 && rc != -EALREADY) {
		LOG_ERR("ble: bt_enable: %d", rc);
		return rc;
	}
	rc = bt_le_ext_adv_create(&adv_param, &adv_callbacks, &adv);
	if (rc != 0) {
		LOG_ERR("ble: bt_le_ext_adv_create: %d", rc);
		return rc;
	}
	bt_le_scan_cb_register(&scan_callbacks);
	k_mutex_lock(&tx_lock, K_FOREVER);
	rc = scan_on();
	k_mutex_unlock(&tx_lock);
	if (rc != 0) {
		return rc;
	}
	zl->link.ctx = NULL;
	zl->link.mtu = CATS_BLE_MTU;
	zl->link.send = link_send;
	zl->link.recv = link_recv;
	zl->wait = link_wait;
	zl->air_send = air_send;
	zl->air_mtu = CATS_BLE_PAYLOAD;
	LOG_INF("ble: extended advertising + scanning, company id 0x%04x, MTU %d",
		CONFIG_CATS_BLE_COMPANY_ID, CATS_BLE_MTU);
	return 0;
}
