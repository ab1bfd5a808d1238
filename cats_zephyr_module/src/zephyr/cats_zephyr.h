/*
 * Internal interface between the CATS Zephyr glue files (not installed).
 */
#ifndef CATS_ZEPHYR_INTERNAL_H_
#define CATS_ZEPHYR_INTERNAL_H_

#include <stdint.h>

#include "cats/cats_port.h"
#include "cats/cats_service.h"

/* A link backend: the portable cats_link plus a way to sleep until it has a frame. */
struct cats_zlink {
	struct cats_link link;
	/* Block up to max_ms or until a received frame is waiting. */
	void (*wait)(void *ctx, uint32_t max_ms);
};

/* The one link backend of this build (CONFIG_CATS_LINK_*): fills *zl, brings the radio up.
 * node_id / nodes / partition_tag identify this node to the link where it needs them
 * (802.15.4 short address, the simulation medium's hello). 0 or a negative errno. */
int cats_link_start(struct cats_zlink *zl, uint16_t node_id, uint16_t nodes,
		    uint32_t partition_tag);

/* Results back to whoever asked (the simulation medium: OutputFrames with NodeCounters);
 * no-op on the radio links. */
void cats_link_report(const struct cats_service_result *res);

/* The port: k_uptime_get_32() and Zephyr logging around the given link. */
void cats_port_zephyr_init(struct cats_port *port, const struct cats_link *link);

#endif /* CATS_ZEPHYR_INTERNAL_H_ */
