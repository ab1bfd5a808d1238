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

/*
 * recv() may return CATS_LINK_SLOT_END instead of a frame length (links with a round
 * schedule, e.g. the simulation medium's SlotEnd): the slot of exchange `exchange` of inference
 * `inference_id` is over, every frame of it that was going to arrive has been returned already.
 * buf then holds CATS_LINK_SLOT_END_LEN bytes (cats_link_slot_end_put/get): the inference id
 * (u32 LE; the runner compares it modulo 2^16, the id on the air) and the exchange (u32 LE).
 * CATS_LINK_SLOT_END is larger than any frame (CATS_SG_FRAME_MAX); links without a schedule
 * never return it.
 */
#define CATS_LINK_SLOT_END 0x7FFF
#define CATS_LINK_SLOT_END_LEN 8

/*
 * A broadcast link (802.15.4 raw frames, BLE extended advertising, or the simulation medium).
 * Frames are the authenticated ColumnFrames of cats_auth.h (message + MIC; the link adds the
 * AirType byte). Every received frame comes with its link-layer source station (node d = d,
 * the gateway = nodes): the 802.15.4 MAC source address, the BLE advertiser address, the
 * medium's stamp in simulation; the receiver checks the frame's claimed sender against it.
 */
struct cats_link {
	void *ctx;
	size_t mtu; /* largest ColumnFrame encoding + MIC one link frame can carry */
	/* Broadcast one frame; returns 0 or a negative errno-style code. */
	int (*send)(void *ctx, const uint8_t *frame, size_t len);
	/* Fetch one received frame into buf (non-blocking) and its link source into *src;
	 * returns its length, 0 if none, CATS_LINK_SLOT_END (see above; cap >=
	 * CATS_LINK_SLOT_END_LEN; *src untouched), or < 0. */
	int (*recv)(void *ctx, uint8_t *buf, size_t cap, uint16_t *src);
};

static inline void cats_link_slot_end_put(uint8_t *buf, uint32_t inference_id,
					  uint32_t exchange)
{
	for (int i = 0; i < 4; i++) {
		buf[i] = (uint8_t)(inference_id >> (8 * i));
		buf[4 + i] = (uint8_t)(exchange >> (8 * i));
	}
}

static inline void cats_link_slot_end_get(const uint8_t *buf, uint32_t *inference_id,
					  uint32_t *exchange)
{
	*inference_id = 0;
	*exchange = 0;
	for (int i = 0; i < 4; i++) {
		*inference_id |= (uint32_t)buf[i] << (8 * i);
		*exchange |= (uint32_t)buf[4 + i] << (8 * i);
	}
}

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
