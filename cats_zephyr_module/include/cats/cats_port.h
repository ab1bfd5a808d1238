/*
 * Port interface: the only things the portable core needs from its platform.
 * Implementations: src/port/host (tests, simulator) and src/zephyr (k_uptime, logging).
 */
#ifndef CATS_PORT_H_
#define CATS_PORT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum cats_log_level { CATS_LOG_ERR = 0, CATS_LOG_WRN = 1, CATS_LOG_INF = 2, CATS_LOG_DBG = 3 };

/* A broadcast link (802.15.4 raw frames, BLE extended advertising, or the simulation medium). */
struct cats_link {
	void *ctx;
	size_t mtu; /* largest ColumnFrame encoding one link frame can carry */
	/* Broadcast one encoded frame; returns 0 or a negative errno-style code. */
	int (*send)(void *ctx, const uint8_t *frame, size_t len);
	/* Fetch one received frame into buf (non-blocking); returns its length, 0 if none, or < 0. */
	int (*recv)(void *ctx, uint8_t *buf, size_t cap);
};

struct cats_port {
	uint32_t (*now_ms)(void *ctx); /* monotonic milliseconds */
	void (*log)(void *ctx, enum cats_log_level level, const char *msg);
	void *ctx;
	struct cats_link link;
};

#ifdef __cplusplus
}
#endif

#endif /* CATS_PORT_H_ */
