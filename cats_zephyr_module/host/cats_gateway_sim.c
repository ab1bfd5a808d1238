/*
 * cats_gateway_sim: the gateway of the simulated swarm (src/gateway/cats_gateway.c on the host).
 *
 *   cats_gateway_sim --partition DIR --medium HOST:PORT --listen PORT --key-file FILE
 *                    [--mic 4|8] [--first-inference N] [--inference-limit N]
 *                    [--instr-per-mac X]
 *                    [--deadline-ms N] [--liveness-ms N] [--phy ieee802154|ble2m|ble2m-aux]
 *                    [--mtu N]
 *
 * Reads the partition from DIR/node-0/manifest.pb, connects to the radio medium as station -1
 * (SimHello), listens on 127.0.0.1:PORT for bridge connections (GatewayMessage, stream type 8,
 * poll(); --listen 0 picks a free port), prints "ready port=PORT" on stdout, and serves until
 * SIGTERM or the medium closes.
 *
 * Bridge clients (up to 64) never block it: sockets are written without blocking, each client's
 * unread replies are bounded (64 KiB; past that it is a slow reader and dropped), a client
 * with more than 16 KiB unread is not read from until they drain (backpressure: a flood of
 * requests it does not read the answers to costs nothing), one whose replies make no progress
 * for 2 s is dropped, a client
 * silent for 30 s is dropped, and with all slots taken the client idle longest (>= 1 s) makes
 * room for a new one. With CATS_SIM_TOKEN set (hex; `cats serve` / `cats sim` set it), the same
 * token goes in its SimHello to the medium, and a client is admitted only after a ClientHello
 * carrying it (anything before is answered -109; a wrong token, or none within 2 s, closes the
 * connection). Requests are queued fairly across clients (cats_gateway.h). From the medium it takes AIR frames (OutputFrames), SlotEnd and StationEvent.
 *
 * --phy sets the PHY model of the input/output frames (their air bytes and airtime, as
 * tools/cats/wire/phy.py models them) and the default --mtu: ieee802154 (115 = 116 - AirType
 * byte), ble2m (240; with the primary-channel ADV_EXT_INDs and T_MAFS) or ble2m-aux (240; the
 * AUX_ADV_IND only). Logs to stderr.
 *
 * Air frames are authenticated (cats_auth.h) with the key of --key-file (never logged) and a
 * MIC of --mic bytes; --first-inference is the first inference id and --inference-limit the end
 * of the ids reserved for this run (the nonces' counter: the caller gives a restarted gateway
 * ids it never used, tools/cats/wire/auth.py reserve_inference_ids; beyond the limit requests
 * are refused with CATS_GW_ERR_IDS). The medium stamps each delivered frame with its link source station.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <pb_decode.h>
#include <pb_encode.h>

#include "cats.pb.h"
#include "cats/cats_gateway.h"
#include "cats/cats_stream.h"
#include "port_host.h"
#include "sim_net.h"

#define MAX_CLIENTS 64
#define IDLE_FLUSH_MS 200 /* a partial message held this long is given up (cats_stream.h) */
#define OUT_MAX (64u * 1024u) /* bytes of replies a client may leave unread: a slow reader */
#define IDLE_TIMEOUT_MS 30000u /* a client silent this long is dropped (the bridge polls 1/s) */
#define HELLO_TIMEOUT_MS 2000u /* with a token: a client without a ClientHello by then */
#define EVICT_IDLE_MS 1000u    /* clients full: the one idle longest, if this idle, makes room */
#define BACKLOG_MAX (OUT_MAX / 4) /* unread replies beyond this: its requests wait (not read) */
#define SLOW_READER_MS 2000u   /* replies pending without progress this long: dropped */

static struct cats_gateway gw;
static int medium = -1;
static uint8_t token[SIM_TOKEN_MAX];
static size_t token_len;

struct client {
	int fd;
	uint32_t id;
	uint32_t last_rx; /* sim_now_ms() of its last bytes */
	uint32_t last_tx; /* sim_now_ms() when its replies last drained (or it had none) */
	int authed;       /* sent a ClientHello with the run's token (or no token is set) */
	const char *doomed; /* why it is dropped after this round (NULL: it stays) */
	struct cats_stream_decoder dec;
	/* Twice the largest message, with CRC prefix states: resync linear in bytes received. */
	uint8_t buf[2 * (CATS_STREAM_MAX_LEN + CATS_STREAM_OVERHEAD)];
	uint16_t prefix[2 * (CATS_STREAM_MAX_LEN + CATS_STREAM_OVERHEAD) + 1];
	size_t out_len, out_off; /* replies not yet written: out[out_off, out_len) */
	uint8_t out[OUT_MAX];
};
static struct client *clients[MAX_CLIENTS];
static uint32_t next_client = 1;
static cats_GatewayMessage hello_msg; /* a client's first message, decoded here */

static uint8_t medium_buf[CATS_STREAM_SIM_MAX_LEN + CATS_STREAM_OVERHEAD];
static struct cats_stream_decoder medium_dec;

static uint32_t io_now(void *ctx)
{
	(void)ctx;
	return sim_now_ms();
}

static int io_air_send(void *ctx, const uint8_t *frame, size_t len)
{
	(void)ctx;
	return sim_send(medium, CATS_STREAM_AIR, frame, len, NULL, 0) == 0 ? 0 : -5;
}

static void doom(struct client *c, const char *why)
{
	if (c->doomed == NULL) {
		c->doomed = why;
	}
}

/* Write what the socket takes now (non-blocking); a broken socket dooms the client. */
static void client_flush(struct client *c)
{
	while (c->out_off < c->out_len && c->doomed == NULL) {
		ssize_t n = send(c->fd, &c->out[c->out_off], c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				doom(c, "write failed");
			}
			break;
		}
		c->out_off += (size_t)n;
		c->last_tx = sim_now_ms();
	}
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
	} else if (c->out_off > OUT_MAX / 2) {
		memmove(c->out, &c->out[c->out_off], c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
}

/* Queue one framed GatewayMessage for a client; a client whose unread replies would pass
 * OUT_MAX is a slow reader and is dropped (the gateway never blocks on one client). */
static int client_send(struct client *c, const uint8_t *msg, size_t len)
{
	int n;

	if (c->doomed != NULL) {
		return -5;
	}
	if (c->out_off == c->out_len) {
		c->last_tx = sim_now_ms(); /* nothing was pending: the wait starts now */
	}
	if (c->out_off > 0 && c->out_len + len + CATS_STREAM_OVERHEAD > OUT_MAX) {
		memmove(c->out, &c->out[c->out_off], c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	n = cats_stream_encode(CATS_STREAM_GATEWAY, msg, len, NULL, 0, &c->out[c->out_len],
			       OUT_MAX - c->out_len);
	if (n < 0) {
		doom(c, "slow reader: its unread replies passed the output limit");
		return -5;
	}
	c->out_len += (size_t)n;
	client_flush(c);
	return 0;
}

static int io_reply(void *ctx, uint32_t id, const uint8_t *msg, size_t len)
{
	(void)ctx;
	for (int i = 0; i < MAX_CLIENTS; i++) {
		if (clients[i] != NULL && clients[i]->id == id) {
			return client_send(clients[i], msg, len);
		}
	}
	return -2; /* gone */
}

static void drop_client(int i, const char *why)
{
	fprintf(stderr, "cats inf: gateway: bridge client %u disconnected (%s)\n",
		(unsigned)clients[i]->id, why);
	close(clients[i]->fd);
	free(clients[i]);
	clients[i] = NULL;
}

static void medium_msg(const struct cats_stream_msg *m)
{
	switch (m->type) {
	case CATS_STREAM_AIR: /* link source station | AirType | message + MIC */
		if (m->len >= 2) {
			(void)cats_gateway_on_air(&gw, m->payload[0], &m->payload[1], m->len - 1u);
		}
		break;
	case CATS_STREAM_SLOT_END:
		(void)cats_gateway_on_slot_end(&gw, m->payload, m->len);
		break;
	case CATS_STREAM_STATION:
		(void)cats_gateway_on_station(&gw, m->payload, m->len);
		break;
	default:
		break;
	}
}

static int token_equal(const uint8_t *a, size_t na)
{
	uint8_t diff = (uint8_t)(na != token_len);

	for (size_t i = 0; i < token_len; i++) {
		diff |= (uint8_t)(token[i] ^ (i < na ? a[i] : 0u));
	}
	return diff == 0;
}

/* An error InferResult to a client that has not authenticated (the core never sees it). */
static void refuse_unauthed(struct client *c, const char *what)
{
	static uint8_t enc[256];
	cats_GatewayMessage m = cats_GatewayMessage_init_zero;
	pb_ostream_t os = pb_ostream_from_buffer(enc, sizeof(enc));

	m.which_msg = cats_GatewayMessage_infer_result_tag;
	m.msg.infer_result.status = CATS_GW_ERR_AUTH;
	snprintf(m.msg.infer_result.message, sizeof(m.msg.infer_result.message), "%s", what);
	if (pb_encode(&os, cats_GatewayMessage_fields, &m)) {
		(void)client_send(c, enc, os.bytes_written);
	}
}

static void client_msg(struct client *c, const struct cats_stream_msg *m)
{
	if (c->doomed != NULL) {
		return;
	}
	if (!c->authed) {
		pb_istream_t is = pb_istream_from_buffer(m->payload, m->len);

		memset(&hello_msg, 0, sizeof(hello_msg));
		if (m->type == CATS_STREAM_GATEWAY &&
		    pb_decode(&is, cats_GatewayMessage_fields, &hello_msg) &&
		    hello_msg.which_msg == cats_GatewayMessage_client_hello_tag) {
			const cats_ClientHello *h = &hello_msg.msg.client_hello;

			if (token_equal(h->token.bytes, h->token.size)) {
				c->authed = 1;
				fprintf(stderr, "cats inf: gateway: client %u authenticated\n",
					(unsigned)c->id);
			} else {
				fprintf(stderr, "cats wrn: gateway: client %u: wrong token\n",
					(unsigned)c->id);
				doom(c, "wrong token");
			}
			return;
		}
		refuse_unauthed(c, "not admitted: send a ClientHello with this run's token "
				   "(CATS_SIM_TOKEN) first");
		return;
	}
	(void)cats_gateway_on_bridge(&gw, c->id, m->type, m->payload, m->len);
}

/* A client's line went idle with a partial message held: give it up, rescan the rest. */
static void flush_idle(struct client *c, uint32_t now)
{
	struct cats_stream_msg m;
	uint32_t skipped = c->dec.skipped;

	if (cats_stream_pending(&c->dec) == 0 || now - c->last_rx < IDLE_FLUSH_MS) {
		return;
	}
	while (cats_stream_flush(&c->dec, &m)) {
		client_msg(c, &m);
	}
	fprintf(stderr, "cats wrn: gateway: client %u: gave up %u bytes of a partial message "
		"(garbage)\n", (unsigned)c->id, (unsigned)(c->dec.skipped - skipped));
}

/* Feed n received bytes to a decoder; the messages to the medium handler or the client. */
static void feed(struct cats_stream_decoder *dec, const uint8_t *p, size_t left,
		 struct client *c)
{
	uint32_t skipped = dec->skipped;

	for (;;) {
		struct cats_stream_msg m;
		size_t used;
		int got = cats_stream_decode(dec, p, left, &used, &m);

		p += used;
		left -= used;
		if (!got) {
			break;
		}
		if (c != NULL) {
			client_msg(c, &m);
		} else {
			medium_msg(&m);
		}
	}
	if (c != NULL && dec->skipped != skipped) {
		fprintf(stderr, "cats wrn: gateway: %u bytes of garbage from client %u\n",
			(unsigned)(dec->skipped - skipped), (unsigned)c->id);
	}
}

/* Read what a socket has and feed it to its decoder; -1 on EOF or error. */
static int drain(int fd, struct cats_stream_decoder *dec, struct client *c)
{
	static uint8_t buf[65536];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

	if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) {
		return -1;
	}
	if (n > 0) {
		feed(dec, buf, (size_t)n, c);
	}
	return 0;
}

static void accept_client(int lfd)
{
	int fd = accept(lfd, NULL, NULL), slot = -1, one = 1;
	uint32_t t = sim_now_ms(), idlest = 0;
	struct client *c;

	if (fd < 0) {
		return;
	}
	for (int i = 0; i < MAX_CLIENTS; i++) {
		if (clients[i] == NULL) {
			slot = i;
			break;
		}
		if (t - clients[i]->last_rx >= idlest) {
			idlest = t - clients[i]->last_rx;
			slot = i;
		}
	}
	if (clients[slot] != NULL) {
		if (idlest < EVICT_IDLE_MS) {
			fprintf(stderr, "cats wrn: gateway: too many bridge clients, all active\n");
			close(fd);
			return;
		}
		drop_client(slot, "the idlest client, to make room for a new one");
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		close(fd);
		return;
	}
	/* Results are small and answer queued requests: no Nagle delay. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	c->id = next_client++;
	c->last_rx = t;
	c->authed = token_len == 0;
	cats_stream_decoder_init(&c->dec, c->buf, sizeof(c->buf));
	cats_stream_decoder_limit(&c->dec, CATS_STREAM_MAX_LEN);
	cats_stream_decoder_prefix(&c->dec, c->prefix, sizeof(c->prefix) / sizeof(c->prefix[0]));
	clients[slot] = c;
	fprintf(stderr, "cats inf: gateway: bridge client %u connected\n", (unsigned)c->id);
}

static void usage(void)
{
	fprintf(stderr, "usage: cats_gateway_sim --partition DIR --medium HOST:PORT --listen PORT "
			"--key-file FILE [--mic 4|8] [--first-inference N] [--inference-limit N] "
			"[--instr-per-mac X] "
			"[--deadline-ms N] [--liveness-ms N] "
			"[--phy ieee802154|ble2m|ble2m-aux] [--mtu N] [--mac-gap-us US]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *dir = NULL, *medium_addr = NULL, *phy = "ieee802154";
	struct cats_gateway_config cfg;
	/* No reserve_ids: the caller reserved [--first-inference, --inference-limit). */
	struct cats_gateway_io io = {NULL, io_now, io_air_send, io_reply, cats_port_host_log, NULL};
	cats_SimHello hello = cats_SimHello_init_zero;
	uint8_t hb[cats_SimHello_size], *man;
	size_t man_len = 0, mtu = 0;
	float mac_gap_us = 0.0f;
	const char *key_file = NULL;
	unsigned long mic = CATS_AUTH_MIC_DEFAULT;
	char path[4096];
	int port = -1, lfd, rc;
	pb_ostream_t os;

	cats_gateway_default_config(&cfg);
	for (int i = 1; i < argc; i++) {
		if (i + 1 >= argc) {
			usage();
		}
		if (!strcmp(argv[i], "--partition")) {
			dir = argv[++i];
		} else if (!strcmp(argv[i], "--medium")) {
			medium_addr = argv[++i];
		} else if (!strcmp(argv[i], "--listen")) {
			port = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--instr-per-mac")) {
			cfg.instr_per_mac = strtof(argv[++i], NULL);
		} else if (!strcmp(argv[i], "--deadline-ms")) {
			cfg.deadline_ms = (uint32_t)strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--liveness-ms")) {
			cfg.liveness_ms = (uint32_t)strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--phy")) {
			phy = argv[++i];
		} else if (!strcmp(argv[i], "--mtu")) {
			mtu = strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--mac-gap-us")) {
			mac_gap_us = strtof(argv[++i], NULL);
		} else if (!strcmp(argv[i], "--key-file")) {
			key_file = argv[++i];
		} else if (!strcmp(argv[i], "--mic")) {
			mic = strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--first-inference")) {
			cfg.first_inference = (uint32_t)strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--inference-limit")) {
			cfg.inference_limit = (uint32_t)strtoul(argv[++i], NULL, 0);
		} else {
			usage();
		}
	}
	if (dir == NULL || medium_addr == NULL || key_file == NULL || port < 0 || port > 65535 ||
	    (mic != 4 && mic != 8)) {
		usage();
	}
	cfg.mic_len = (uint8_t)mic;
	if (sim_read_key(key_file, cfg.key) != 0) {
		return 1;
	}
	if (!strcmp(phy, "ieee802154")) {
		/* SHR + PHR 6, MHR 9, FCS 2 at 32 us per byte */
		cfg.mtu = 115;
		cfg.phy_overhead_bytes = cfg.phy_framing_bytes = 17;
		cfg.phy_us_per_byte = 32.0f;
		cfg.phy_extra_us = 0.0f;
	} else if (!strcmp(phy, "ble2m") || !strcmp(phy, "ble2m-aux")) {
		/* AUX_ADV_IND on LE 2M: preamble 2, AA 4, header 2, CRC 3, ext header 10, AD
		 * header 4 at 4 us per byte; ble2m adds 3 ADV_EXT_IND of 17 bytes on LE 1M (8 us
		 * per byte) and T_MAFS 300 us. */
		int aux = !strcmp(phy, "ble2m-aux");

		cfg.mtu = 240;
		cfg.phy_framing_bytes = 25;
		cfg.phy_overhead_bytes = (uint16_t)(aux ? 25 : 25 + 3 * 17);
		cfg.phy_us_per_byte = 4.0f;
		cfg.phy_extra_us = aux ? 0.0f : 3 * 17 * 8.0f + 300.0f;
	} else {
		usage();
	}
	if (mtu) {
		cfg.mtu = mtu;
	}
	/* The MAC's channel time per frame besides its airtime (tools/cats/wire/phy.py Mac:
	 * CSMA-CA backoff + CCA + turnaround on 802.15.4), for the gateway's own frames. */
	cfg.phy_extra_us += mac_gap_us;
	sim_install_signals();
	rc = sim_token(token, sizeof(token));
	if (rc < 0) {
		return 1;
	}
	token_len = (size_t)rc;
	snprintf(path, sizeof(path), "%s/node-0/manifest.pb", dir);
	man = sim_read_file(path, &man_len);
	if (man == NULL) {
		return 1;
	}
	rc = cats_gateway_init(&gw, &cfg, &io, man, man_len);
	memset(cfg.key, 0, sizeof(cfg.key));
	free(man);
	if (rc != 0) {
		fprintf(stderr, "cats err: gateway: %s: partition rejected (%d)\n", path, rc);
		return 1;
	}
	cats_stream_decoder_init(&medium_dec, medium_buf, sizeof(medium_buf));
	lfd = sim_listen(port);
	if (lfd < 0) {
		return 1;
	}
	{
		struct sockaddr_in a;
		socklen_t alen = sizeof(a);

		if (getsockname(lfd, (struct sockaddr *)&a, &alen) == 0) {
			port = ntohs(a.sin_port); /* --listen 0: the port the system chose */
		}
	}
	medium = sim_connect(medium_addr);
	if (medium < 0) {
		return 1;
	}
	hello.node_id = -1;
	hello.nodes = gw.nodes;
	hello.partition_tag = gw.tag;
	hello.mtu = (uint32_t)cfg.mtu;
	memcpy(hello.token.bytes, token, token_len);
	hello.token.size = (pb_size_t)token_len;
	os = pb_ostream_from_buffer(hb, sizeof(hb));
	if (!pb_encode(&os, cats_SimHello_fields, &hello) ||
	    sim_send(medium, CATS_STREAM_HELLO, hb, os.bytes_written, NULL, 0) != 0) {
		fprintf(stderr, "cats err: gateway: hello to the medium failed\n");
		return 1;
	}
	fprintf(stderr, "cats inf: gateway: medium %s, bridge on 127.0.0.1:%d, phy %s, mtu %zu\n",
		medium_addr, port, phy, cfg.mtu);
	printf("ready port=%d\n", port);
	fflush(stdout);

	while (!sim_stop) {
		struct pollfd pfd[2 + MAX_CLIENTS];
		int idx[2 + MAX_CLIENTS], n = 0;
		uint32_t wait = cats_gateway_next_ms(&gw), t = sim_now_ms();

		for (int i = 0; i < MAX_CLIENTS; i++) {
			if (clients[i] != NULL) {
				uint32_t idle = t - clients[i]->last_rx;
				uint32_t limit = cats_stream_pending(&clients[i]->dec) > 0
							 ? IDLE_FLUSH_MS
							 : (!clients[i]->authed ? HELLO_TIMEOUT_MS
									       : IDLE_TIMEOUT_MS);
				uint32_t left = idle < limit ? limit - idle : 0;

				wait = left < wait ? left : wait;
			}
		}

		pfd[n].fd = medium;
		pfd[n].events = POLLIN;
		idx[n++] = -1;
		pfd[n].fd = lfd;
		pfd[n].events = POLLIN;
		idx[n++] = -2;
		for (int i = 0; i < MAX_CLIENTS; i++) {
			if (clients[i] != NULL) {
				pfd[n].fd = clients[i]->fd;
				size_t backlog = clients[i]->out_len - clients[i]->out_off;

				/* A client that does not read its replies is not read either:
				 * its requests wait in its socket (backpressure, no CPU spent). */
				pfd[n].events = (short)((backlog < BACKLOG_MAX ? POLLIN : 0) |
							(backlog > 0 ? POLLOUT : 0));
				idx[n++] = i;
			}
		}
		rc = poll(pfd, (nfds_t)n, wait > 1000 ? 1000 : (int)wait);
		if (rc < 0 && errno != EINTR) {
			break;
		}
		for (int k = 0; rc > 0 && k < n; k++) {
			struct client *c;

			if (!(pfd[k].revents & (POLLIN | POLLOUT | POLLHUP | POLLERR))) {
				continue;
			}
			if (idx[k] == -1) {
				if (drain(medium, &medium_dec, NULL) < 0) {
					fprintf(stderr, "cats inf: gateway: medium closed the connection\n");
					sim_stop = 1;
				}
				continue;
			}
			if (idx[k] == -2) {
				accept_client(lfd);
				continue;
			}
			c = clients[idx[k]];
			if (c == NULL || c->fd != pfd[k].fd) {
				continue;
			}
			if (pfd[k].revents & POLLOUT) {
				client_flush(c);
			}
			if (pfd[k].revents & (POLLIN | POLLHUP | POLLERR)) {
				c->last_rx = sim_now_ms();
				if (drain(c->fd, &c->dec, c) < 0) {
					doom(c, "closed");
				}
			}
		}
		t = sim_now_ms();
		for (int i = 0; i < MAX_CLIENTS; i++) {
			struct client *c = clients[i];

			if (c == NULL) {
				continue;
			}
			flush_idle(c, t);
			if (c->out_len > c->out_off && t - c->last_tx >= SLOW_READER_MS) {
				doom(c, "slow reader: its replies stayed unread");
			} else if (!c->authed && t - c->last_rx >= HELLO_TIMEOUT_MS) {
				doom(c, "no ClientHello");
			} else if (t - c->last_rx >= IDLE_TIMEOUT_MS) {
				doom(c, "idle");
			}
		}
		cats_gateway_poll(&gw);
		for (int i = 0; i < MAX_CLIENTS; i++) {
			if (clients[i] != NULL && clients[i]->doomed != NULL) {
				drop_client(i, clients[i]->doomed);
			}
		}
	}
	fprintf(stderr, "cats inf: gateway: exiting after %llu inferences\n",
		(unsigned long long)gw.inferences);
	for (int i = 0; i < MAX_CLIENTS; i++) {
		if (clients[i] != NULL) {
			close(clients[i]->fd);
			free(clients[i]);
		}
	}
	close(lfd);
	close(medium);
	return 0;
}
