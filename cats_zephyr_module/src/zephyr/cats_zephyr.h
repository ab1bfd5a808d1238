/*
 * Internal interface between the CATS Zephyr glue files (not installed).
 *
 * A link backend (CONFIG_CATS_LINK_*: link_ieee802154.c, link_ble.c, link_sim.c) carries
 * radio frames: the AirType dispatch byte + one message of proto/cats.proto. ColumnFrames
 * go to the node's runner through struct cats_link; every other air type (the gateway's
 * InputFrames, the nodes' OutputFrames) goes to the role's air handler: the node service
 * (air_io.c) or the gateway application.
 */
#ifndef CATS_ZEPHYR_INTERNAL_H_
#define CATS_ZEPHYR_INTERNAL_H_

#include <stddef.h>
#include <stdint.h>

#include "cats/cats_auth.h"
#include "cats/cats_port.h"
#include "cats/cats_service.h"

/* Received radio frames other than AIR_COLUMN (frame[0] is the AirType; message + MIC follow)
 * from link source station `src` (node d: d, the gateway: nodes; 0xFFFF for a source outside
 * the swarm: the 802.15.4 MAC source address, the BLE advertiser address). Called from the link's receive context (a link RX thread or the BT
 * RX thread): copy, do not block long. */
typedef void (*cats_air_handler_t)(uint16_t src, const uint8_t *frame, size_t len);

/* The gateway's station id on the links (node ids are 0 .. nodes-1). */
#define CATS_STATION_GATEWAY 0xFFFFu

struct cats_zlink {
	struct cats_link link; /* ColumnFrames (the runner's view) */
	/* Block up to max_ms or until a received ColumnFrame is waiting. */
	void (*wait)(void *ctx, uint32_t max_ms);
	/* Broadcast one radio frame (AirType byte + message, at most air_mtu bytes). */
	int (*air_send)(const uint8_t *frame, size_t len);
	size_t air_mtu;
};

/* The one link backend of this build (CONFIG_CATS_LINK_*): fills *zl, brings the radio up.
 * station: the node id, or CATS_STATION_GATEWAY; nodes / partition_tag identify the swarm
 * where the link needs them (802.15.4 short address, the simulation medium's hello).
 * on_air receives the frames that are not ColumnFrames. 0 or a negative errno. */
int cats_link_start(struct cats_zlink *zl, uint16_t station, uint16_t nodes,
		    uint32_t partition_tag, cats_air_handler_t on_air);

/* Node role (air_io.c): the gateway's InputFrames, assembled and handed to
 * cats_service_submit() (the air handler of the node service). */
void cats_air_node_input(uint16_t src, const uint8_t *frame, size_t len);

/* The swarm key of this build (CONFIG_CATS_SWARM_KEY, 32 hex digits) and MIC length
 * (CONFIG_CATS_MIC_LEN): 0, or -EINVAL for a missing or malformed key (logged, not shown). */
int cats_zephyr_key(uint8_t key[16]);

/* The node's authentication state (cats_service.c); NULL before the service started. */
struct cats_auth *cats_service_auth(void);

/* Node role (air_io.c): the result of an inference as OutputFrames on the link (the output
 * slice + NodeCounters), for the gateway. */
void cats_air_node_report(const struct cats_zlink *zl, const struct cats_service_result *res);

/* The partition linked into the image (partition.c): node CATS_NODE_ID's NodeManifest and
 * weight blob; NULL with *len = 0 when the image has none (or, for the blob, on a gateway). */
const uint8_t *cats_partition_get_manifest(size_t *len);
const uint8_t *cats_partition_get_blob(size_t *len);

/* Inputs handed to the service thread so far (cats_service.c; counted before the thread can
 * start the inference). */
uint32_t cats_service_inputs(void);

/* A core log line to the `cats` log module (the port's and the gateway's log hook). */
void cats_port_zephyr_log(void *ctx, enum cats_log_level level, const char *msg);

/* The port: k_uptime_get_32() and Zephyr logging around the given link. */
void cats_port_zephyr_init(struct cats_port *port, const struct cats_link *link);

#endif /* CATS_ZEPHYR_INTERNAL_H_ */
