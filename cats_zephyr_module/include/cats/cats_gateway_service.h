/*
 * The gateway on a Zephyr device (CONFIG_CATS_GATEWAY + a link, CONFIG_CATS_LINK_*): the
 * portable gateway (cats/cats_gateway.h) over this build's radio link. It broadcasts each
 * request's input in InputFrames and collects the nodes' OutputFrames from the air; the
 * partition comes from the manifest linked into the image (-DCATS_PARTITION_DIR, any node's).
 *
 * The application owns the bridge to the robot (a UART carrying the framed byte stream of
 * cats/cats_stream.h on hardware, host files under BabbleSim: samples/gateway): it hands
 * every bridge message to cats_gw_service_request() and gets the answers through its reply
 * callback. All three calls below come from one thread, the application's loop.
 */
#ifndef CATS_GATEWAY_SERVICE_H_
#define CATS_GATEWAY_SERVICE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Send one encoded GatewayMessage to bridge client `client`; 0 or < 0. */
typedef int (*cats_gw_reply_t)(uint32_t client, const uint8_t *msg, size_t len);

/* Decode the linked manifest, bring the link up. 0, -ENOENT (no partition linked in),
 * -EINVAL (the manifest is beyond the gateway's limits) or a link error. */
int cats_gw_service_start(cats_gw_reply_t reply);

/* One bridge message (stream type `type`, CATS_STREAM_GATEWAY expected) from `client`. */
int cats_gw_service_request(uint32_t client, uint8_t type, const uint8_t *msg, size_t len);

/* Feed the OutputFrames received since the last call to the gateway and end inferences whose
 * deadline passed; sleeps until a frame arrives or at most max_ms. */
void cats_gw_service_run(uint32_t max_ms);

/* 1 while a request is running or waiting. */
int cats_gw_service_busy(void);

#ifdef __cplusplus
}
#endif

#endif /* CATS_GATEWAY_SERVICE_H_ */
