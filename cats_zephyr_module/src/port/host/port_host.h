/*
 * Host port (Linux/macOS): monotonic clock and logging to stderr, for the tests, the
 * simulator and the host tools. The link is left to the caller (the simulator's medium).
 */
#ifndef CATS_PORT_HOST_H_
#define CATS_PORT_HOST_H_

#include "cats/cats_port.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fill `port` with the host clock and stderr logging; link callbacks are left NULL. */
void cats_port_host_init(struct cats_port *port);

uint32_t cats_port_host_now_ms(void *ctx);
void cats_port_host_log(void *ctx, enum cats_log_level level, const char *msg);

#ifdef __cplusplus
}
#endif

#endif /* CATS_PORT_HOST_H_ */
