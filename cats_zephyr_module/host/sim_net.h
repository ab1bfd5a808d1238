/*
 * Host side of the simulated swarm (cats_node_sim, cats_gateway_sim): TCP to the radio-medium
 * process and the framed byte stream (cats_stream.h) over it. POSIX; not part of the core.
 */
#ifndef CATS_SIM_NET_H_
#define CATS_SIM_NET_H_

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

/* Set by SIGTERM / SIGINT (sim_install_signals). */
extern volatile sig_atomic_t sim_stop;

void sim_install_signals(void);

/* "HOST:PORT" -> a connected TCP socket (TCP_NODELAY), or -1 (logged). */
int sim_connect(const char *hostport);

/* A listening TCP socket on 127.0.0.1:port, or -1. */
int sim_listen(int port);

/* Write all of buf (blocking; retries on EINTR). 0 or -1. */
int sim_write_all(int fd, const uint8_t *buf, size_t len);

/* One framed message: type + payload a (na bytes) + b (nb bytes). 0 or -1. */
int sim_send(int fd, uint8_t type, const uint8_t *a, size_t na, const uint8_t *b, size_t nb);

/* Read a whole file into a malloc'd buffer (16-byte aligned); NULL on error. */
uint8_t *sim_read_file(const char *path, size_t *len);

/* The run's admission token: the hex string in the environment variable CATS_SIM_TOKEN
 * (set by `cats serve` / `cats sim` for their stations; not on the command line, so not in
 * `ps`) decoded into out (up to cap bytes). Its length, 0 when unset, -1 when malformed. */
#define SIM_TOKEN_ENV "CATS_SIM_TOKEN"
#define SIM_TOKEN_MAX 32
int sim_token(uint8_t *out, size_t cap);
/* The swarm key from a key file: 32 hex digits (whitespace around them ignored) or 16 raw
 * bytes; refuses a file others may read. 0 or -1 (logged, without the key). */
int sim_read_key(const char *path, uint8_t key[16]);

/* Monotonic milliseconds. */
uint32_t sim_now_ms(void);

#endif /* CATS_SIM_NET_H_ */
