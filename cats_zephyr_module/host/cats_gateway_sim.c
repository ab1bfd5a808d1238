/*
 * cats_gateway_sim: the gateway of the simulated swarm (src/gateway/cats_gateway.c on the host).
 *
 *   cats_gateway_sim --partition DIR --medium HOST:PORT --listen PORT --key-file FILE
 *                    [--mic 4|8] [--first-inference N] [--instr-per-mac X]
 *                    [--deadline-ms N] [--liveness-ms N] [--phy ieee802154|ble2m|ble2m-aux]
 *                    [--mtu N]
 *
 * Reads the partition from DIR/node-0/manifest.pb, connects to the radio medium as station -1
 * (SimHello), listens on 127.0.0.1:PORT for bridge connections (GatewayMessage, stream type 8,
 * any number of clients, poll(); --listen 0 picks a free port), prints "ready port=PORT" on
 * stdout, and serves until SIGTERM or the
 * medium closes. From the medium it takes AIR frames (OutputFrames), SlotEnd and StationEvent.
 *
 * --phy sets the PHY model of the input/output frames (their air bytes and airtime, as
 * tools/cats/wire/phy.py models them) and the default --mtu: ieee802154 (115 = 116 - AirType
 * byte), ble2m (240; with the primary-channel ADV_EXT_INDs and T_MAFS) or ble2m-aux (240; the
 * AUX_ADV_IND only). Logs to stderr.
 *
 * Air frames are authenticated (cats_auth.h) with the key of --key-file (never logged) and a
 * MIC of --mic bytes; --first-inference is the first inference id (the nonces' counter: the
 * caller gives a restarted gateway ids it never used, tools/cats/wire/auth.py
 * next_inference_base). The medium stamps each delivered frame with its link source station.
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

#include <pb_encode.h>

#include "cats.pb.h"
#include "cats/cats_gateway.h"
#include "cats/cats_stream.h"
#include "port_host.h"
#include "sim_net.h"

#define MAX_CLIENTS 32
#define IDLE_FLUSH_MS 200 /* a partial message held this long is given up (cats_stream.h) */

static struct cats_gateway gw;
static int medium = -1;

struct client {
	int fd;
	uint32_t id;
	uint32_t last_rx; /* sim_now_ms() of its last bytes */
	struct cats_stream_decoder dec;
	uint8_t buf[CATS_STREAM_MAX_LEN + CATS_STREAM_OVERHEAD];
};
static struct client *clients[MAX_CLIENTS];
static uint32_t next_client = 1;

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

static int io_reply(void *ctx, uint32_t id, const uint8_t *msg, size_t len)
{
	(void)ctx;
	for (int i = 0; i < MAX_CLIENTS; i++) {
		if (clients[i] != NULL && clients[i]->id == id) {
			return sim_send(clients[i]->fd, CATS_STREAM_GATEWAY, msg, len, NULL, 0) == 0
				       ? 0
				       : -5;
		}
	}
	return -2; /* gone */
}

static void drop_client(int i)
{
	fprintf(stderr, "cats inf: gateway: bridge client %u disconnected\n",
		(unsigned)clients[i]->id);
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

static void client_msg(uint32_t client, const struct cats_stream_msg *m)
{
	(void)cats_gateway_on_bridge(&gw, client, m->type, m->payload, m->len);
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
		client_msg(c->id, &m);
	}
	fprintf(stderr, "cats wrn: gateway: client %u: gave up %u bytes of a partial message "
		"(garbage)\n", (unsigned)c->id, (unsigned)(c->dec.skipped - skipped));
}

/* Read what a socket has and feed it to its decoder; -1 on EOF or error. */
static int drain(int fd, struct cats_stream_decoder *dec, uint32_t client)
{
	static uint8_t buf[65536];
	ssize_t n = recv(fd, buf, sizeof(buf), 0);
	const uint8_t *p = buf;
	size_t left;

	if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
		return -1;
	}
	if (n < 0) {
		return 0;
	}
	left = (size_t)n;
	for (;;) {
		struct cats_stream_msg m;
		size_t used;
		uint32_t skipped = dec->skipped;
		int got = cats_stream_decode(dec, p, left, &used, &m);

		if (client && dec->skipped != skipped) {
			fprintf(stderr, "cats wrn: gateway: %u bytes of garbage from client %u\n",
				(unsigned)(dec->skipped - skipped), (unsigned)client);
		}
		p += used;
		left -= used;
		if (!got) {
			break;
		}
		if (client) {
			client_msg(client, &m);
		} else {
			medium_msg(&m);
		}
	}
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: cats_gateway_sim --partition DIR --medium HOST:PORT --listen PORT "
			"--key-file FILE [--mic 4|8] [--first-inference N] [--instr-per-mac X] [--deadline-ms N] [--liveness-ms N] "
			"[--phy ieee802154|ble2m|ble2m-aux] [--mtu N]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *dir = NULL, *medium_addr = NULL, *phy = "ieee802154";
	struct cats_gateway_config cfg;
	struct cats_gateway_io io = {NULL, io_now, io_air_send, io_reply, cats_port_host_log};
	cats_SimHello hello = cats_SimHello_init_zero;
	uint8_t hb[cats_SimHello_size], *man;
	size_t man_len = 0, mtu = 0;
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
		} else if (!strcmp(argv[i], "--key-file")) {
			key_file = argv[++i];
		} else if (!strcmp(argv[i], "--mic")) {
			mic = strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--first-inference")) {
			cfg.first_inference = (uint32_t)strtoul(argv[++i], NULL, 0);
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
	sim_install_signals();
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
			if (clients[i] != NULL && cats_stream_pending(&clients[i]->dec) > 0) {
				uint32_t idle = t - clients[i]->last_rx;
				uint32_t left = idle < IDLE_FLUSH_MS ? IDLE_FLUSH_MS - idle : 0;

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
				pfd[n].events = POLLIN;
				idx[n++] = i;
			}
		}
		rc = poll(pfd, (nfds_t)n, wait > 1000 ? 1000 : (int)wait);
		if (rc < 0 && errno != EINTR) {
			break;
		}
		for (int k = 0; rc > 0 && k < n; k++) {
			if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR))) {
				continue;
			}
			if (idx[k] == -1) {
				if (drain(medium, &medium_dec, 0) < 0) {
					fprintf(stderr, "cats inf: gateway: medium closed the connection\n");
					sim_stop = 1;
				}
			} else if (idx[k] == -2) {
				int fd = accept(lfd, NULL, NULL);
				int slot = -1;

				for (int i = 0; fd >= 0 && i < MAX_CLIENTS; i++) {
					if (clients[i] == NULL) {
						slot = i;
						break;
					}
				}
				if (fd >= 0 && slot < 0) {
					fprintf(stderr, "cats wrn: gateway: too many bridge clients\n");
					close(fd);
				} else if (fd >= 0) {
					struct client *c = calloc(1, sizeof(*c));

					if (c == NULL) {
						close(fd);
						continue;
					}
					int one = 1;

					/* Results are small and answer queued requests: no Nagle delay. */
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					c->fd = fd;
					c->id = next_client++;
					cats_stream_decoder_init(&c->dec, c->buf, sizeof(c->buf));
					clients[slot] = c;
					fprintf(stderr, "cats inf: gateway: bridge client %u connected\n",
						(unsigned)c->id);
				}
			} else if (clients[idx[k]] != NULL) {
				clients[idx[k]]->last_rx = sim_now_ms();
				if (drain(clients[idx[k]]->fd, &clients[idx[k]]->dec,
					  clients[idx[k]]->id) < 0) {
					drop_client(idx[k]);
				}
			}
		}
		t = sim_now_ms();
		for (int i = 0; i < MAX_CLIENTS; i++) {
			if (clients[i] != NULL) {
				flush_idle(clients[i], t);
			}
		}
		cats_gateway_poll(&gw);
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
