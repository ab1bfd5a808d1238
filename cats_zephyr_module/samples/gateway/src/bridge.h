/*
 * The gateway sample's bridge to the robot: one implementation per build
 * (bridge_uart.c on hardware, bridge_host.c on nrf52_bsim / native_sim).
 */
#ifndef CATS_SAMPLE_BRIDGE_H_
#define CATS_SAMPLE_BRIDGE_H_

#include <stddef.h>
#include <stdint.h>

#define BRIDGE_CLIENT 1u /* the one client of the bridge */

/* Open the bridge. 0 or < 0. */
int bridge_open(void);

/* Called from the main loop when the gateway may take a request: feed at most one bridge
 * message to cats_gw_service_request(). Returns 1 when one was fed, 0 when none is waiting,
 * -1 when the bridge has ended (no more requests will come). */
int bridge_poll(int gateway_busy);

/* The loop has ended (the bridge ended and the gateway is idle). */
void bridge_close(void);

/* The gateway's answer to the bridge client (the service's reply callback). */
int bridge_reply(uint32_t client, const uint8_t *msg, size_t len);

#endif /* CATS_SAMPLE_BRIDGE_H_ */
