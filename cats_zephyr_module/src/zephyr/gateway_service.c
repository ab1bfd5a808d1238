/*
 * The gateway over a radio link (include/cats/cats_gateway_service.h). The link's receive
 * context queues OutputFrames; the application's thread feeds them to the portable gateway
 * (src/gateway/cats_gateway.c), which is not thread safe and so only ever runs there.
 */
#include <errno.h>
#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/sys/util.h>

#if defined(CONFIG_CATS_GATEWAY_ID_STORE)
#include <zephyr/settings/settings.h>
#endif

#include "cats/cats_gateway.h"
#include "cats/cats_gateway_service.h"
#include "cats/cats_stream.h"
#include "cats_zephyr.h"

LOG_MODULE_DECLARE(cats, CONFIG_CATS_LOG_LEVEL);

struct air_item {
	uint16_t len;
	uint16_t src; /* link source station */
	uint8_t data[CATS_GW_AIR_MAX];
};

K_MSGQ_DEFINE(cats_gw_air_q, sizeof(struct air_item), CONFIG_CATS_GATEWAY_AIR_QUEUE, 4);
static struct cats_gateway gw;
static struct cats_zlink zlink;
static cats_gw_reply_t bridge_reply;
static struct air_item rx_item; /* the link's receive context only */
static uint32_t air_dropped;

static void on_air(uint16_t src, const uint8_t *frame, size_t len)
{
	if (len < 1 || frame[0] != CATS_AIR_OUTPUT || len > sizeof(rx_item.data)) {
		return;
	}
	rx_item.src = src;
	rx_item.len = (uint16_t)len;
	memcpy(rx_item.data, frame, len);
	if (k_msgq_put(&cats_gw_air_q, &rx_item, K_NO_WAIT) != 0) {
		air_dropped++;
	}
}

static uint32_t io_now(void *ctx)
{
	ARG_UNUSED(ctx);
	return k_uptime_get_32();
}

static int io_air_send(void *ctx, const uint8_t *frame, size_t len)
{
	ARG_UNUSED(ctx);
	return zlink.air_send(frame, len);
}

static int io_reply(void *ctx, uint32_t client, const uint8_t *msg, size_t len)
{
	ARG_UNUSED(ctx);
	return bridge_reply(client, msg, len);
}

#if defined(CONFIG_CATS_GATEWAY_ID_STORE)
/* "cats/gw_ids": the end of the last reserved block of inference ids (cats_gateway_config
 * inference_limit). A rebooted gateway starts there: every id below it may have been used. */
static uint32_t ids_end;

static int ids_set(const char *name, size_t len, settings_read_cb read_cb, void *cb_arg)
{
	uint32_t v;

	if (!settings_name_steq(name, "gw_ids", NULL)) {
		return -ENOENT;
	}
	if (len != sizeof(v) || read_cb(cb_arg, &v, sizeof(v)) != (ssize_t)sizeof(v)) {
		return -EINVAL;
	}
	ids_end = v;
	return 0;
}

SETTINGS_STATIC_HANDLER_DEFINE(cats_gw, "cats", NULL, ids_set, NULL, NULL);

/* struct cats_gateway_io reserve_ids: store the end of a new block before any id of it is
 * used. */
static int io_reserve_ids(void *ctx, uint32_t next, uint32_t *limit)
{
	uint32_t end;
	int rc;

	ARG_UNUSED(ctx);
	if (next >= CATS_GW_ID_END - CONFIG_CATS_GATEWAY_ID_BLOCK) {
		LOG_ERR("inference ids of this swarm key are used up: re-key the swarm");
		return -ENOSPC;
	}
	end = next + CONFIG_CATS_GATEWAY_ID_BLOCK;
	rc = settings_save_one("cats/gw_ids", &end, sizeof(end));
	if (rc != 0) {
		LOG_ERR("storing the inference id counter failed: %d", rc);
		return rc;
	}
	ids_end = end;
	*limit = end;
	return 0;
}

/* The first id of this boot and its reserved block, from the settings. */
static int ids_load(struct cats_gateway_config *cfg)
{
	int rc = settings_subsys_init();

	if (rc == 0) {
		rc = settings_load_subtree("cats");
	}
	if (rc != 0) {
		LOG_ERR("settings (inference id counter) unavailable: %d", rc);
		return rc;
	}
	cfg->first_inference = ids_end > 0 ? ids_end : 1u;
	rc = io_reserve_ids(NULL, cfg->first_inference, &cfg->inference_limit);
	if (rc == 0) {
		LOG_INF("inference ids from %u (reserved below %u)", cfg->first_inference,
			cfg->inference_limit);
	}
	return rc;
}
#endif /* CONFIG_CATS_GATEWAY_ID_STORE */

/* The PHY model of the input / output frames (their air bytes and airtime in the results),
 * as tools/cats/wire/phy.py models this link. */
static void phy_model(struct cats_gateway_config *cfg)
{
#if defined(CONFIG_CATS_LINK_BLE)
	/* AUX_ADV_IND on LE 2M: preamble 2, access address 4, PDU header 2, CRC 3, extended
	 * header 10, AD header 4 at 4 us per byte; 3 ADV_EXT_IND of 17 bytes on LE 1M (8 us
	 * per byte) and T_MAFS before it. */
	cfg->phy_framing_bytes = 25;
	cfg->phy_overhead_bytes = 25 + 3 * 17;
	cfg->phy_us_per_byte = 4.0f;
	cfg->phy_extra_us = 3 * 17 * 8.0f + 300.0f;
#else
	ARG_UNUSED(cfg); /* the default: 802.15.4 (and its frames on the simulation link) */
#endif
}

int cats_gw_service_start(cats_gw_reply_t reply)
{
	struct cats_gateway_config cfg;
	const struct cats_gateway_io io = {
		.ctx = NULL,
		.now_ms = io_now,
		.air_send = io_air_send,
		.reply = io_reply,
		.log = cats_port_zephyr_log,
#if defined(CONFIG_CATS_GATEWAY_ID_STORE)
		.reserve_ids = io_reserve_ids,
#endif
	};
	size_t len;
	const uint8_t *manifest = cats_partition_get_manifest(&len);
	int rc;

	if (len == 0) {
		LOG_ERR("built without a partition (-DCATS_PARTITION_DIR=...)");
		return -ENOENT;
	}
	bridge_reply = reply;
	cats_gateway_default_config(&cfg);
	phy_model(&cfg);
	cfg.deadline_ms = CONFIG_CATS_GATEWAY_DEADLINE_MS;
	cfg.mic_len = CONFIG_CATS_MIC_LEN;
	/* Inference ids are the nonces' counter: never reused under one key. */
#if defined(CONFIG_CATS_GATEWAY_ID_STORE)
	rc = ids_load(&cfg);
	if (rc != 0) {
		return rc;
	}
#else
	cfg.first_inference = 1;
	LOG_WRN("inference ids restart at 1 on every boot (CONFIG_CATS_GATEWAY_ID_STORE=n): "
		"re-key the swarm or reboot its nodes too");
#endif
	rc = cats_zephyr_key(cfg.key);
	if (rc != 0) {
		return rc;
	}
	/* Until the link is up the MTU is unknown; init only reads the manifest. */
	rc = cats_gateway_init(&gw, &cfg, &io, manifest, len);
	if (rc != 0) {
		LOG_ERR("partition manifest rejected: %d", rc);
		return -EINVAL;
	}
	rc = cats_link_start(&zlink, CATS_STATION_GATEWAY, gw.nodes, gw.tag, on_air);
	if (rc < 0) {
		LOG_ERR("link start failed: %d", rc);
		return rc;
	}
	gw.cfg.mtu = zlink.air_mtu - 1u;
	LOG_INF("gateway of %u nodes, input %zu bytes, %u outputs, air MTU %zu", gw.nodes,
		gw.input_len, gw.outputs, zlink.air_mtu);
	return 0;
}

int cats_gw_service_request(uint32_t client, uint8_t type, const uint8_t *msg, size_t len)
{
	return cats_gateway_on_bridge(&gw, client, type, msg, len);
}

void cats_gw_service_run(uint32_t max_ms)
{
	static struct air_item it;
	k_timeout_t wait = K_MSEC(MIN(max_ms, cats_gateway_next_ms(&gw)));

	while (k_msgq_get(&cats_gw_air_q, &it, wait) == 0) {
		(void)cats_gateway_on_air(&gw, it.src, it.data, it.len);
		wait = K_NO_WAIT;
	}
	if (air_dropped != 0) {
		LOG_WRN("%u OutputFrames dropped (air queue full)", air_dropped);
		air_dropped = 0;
	}
	cats_gateway_poll(&gw);
}

int cats_gw_service_busy(void)
{
	return gw.running || gw.q_count != 0;
}
