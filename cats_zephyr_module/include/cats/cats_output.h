/*
 * A node's result for the gateway (proto/cats.proto OutputFrame): its output slice cut into
 * radio frames of at most the link's MTU, the first carrying the NodeCounters. Portable C99,
 * shared by the simulator's node (host/cats_node_sim.c) and the Zephyr service
 * (src/zephyr/air_io.c).
 */
#ifndef CATS_OUTPUT_H_
#define CATS_OUTPUT_H_

#include <stddef.h>
#include <stdint.h>

#include "cats.pb.h"
#include "cats/cats_auth.h"
#include "cats/cats_somegather.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The NodeCounters fields that mirror the SomeGather statistics and (as may be NULL) the air
 * frames' authentication: its malformed and sender rejections add to SomeGather's. */
void cats_output_counters(const struct cats_sg_stats *st, const struct cats_auth_stats *as,
			  cats_NodeCounters *c);

/* Send *f (inference id, tag, sender, status, start and counters set by the caller) with the
 * output slice y[0 .. count) as OutputFrames of at most `mtu` bytes with the MIC, each sealed
 * by `auth` and handed to send() as an air frame (the AirType byte + the OutputFrame + MIC)
 * built in buf (cap >= mtu + 1).
 * CATS_OK, CATS_ERR_ARG (the MTU cannot carry the slice, or a frame does not encode) or the
 * first negative result of send(). */
int cats_output_send(cats_OutputFrame *f, const int8_t *y, size_t count, size_t mtu,
		     struct cats_auth *auth, uint8_t *buf, size_t cap,
		     int (*send)(void *ctx, const uint8_t *air, size_t len), void *ctx);

#ifdef __cplusplus
}
#endif

#endif /* CATS_OUTPUT_H_ */
