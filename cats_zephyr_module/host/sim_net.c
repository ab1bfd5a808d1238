/*
 * Host networking for the simulated swarm (see sim_net.h).
 */
#define _POSIX_C_SOURCE 200809L

#include "sim_net.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cats/cats_auth.h"
#include "cats/cats_stream.h"

volatile sig_atomic_t sim_stop;

static void on_signal(int sig)
{
	(void)sig;
	sim_stop = 1;
}

void sim_install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal; /* no SA_RESTART: poll() returns EINTR */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

int sim_connect(const char *hostport)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	struct addrinfo hints, *res = NULL, *ai;
	int fd = -1, one = 1, rc;

	if (colon == NULL || (size_t)(colon - hostport) >= sizeof(host)) {
		fprintf(stderr, "sim: --medium wants HOST:PORT, got '%s'\n", hostport);
		return -1;
	}
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, colon + 1, &hints, &res);
	if (rc != 0) {
		fprintf(stderr, "sim: %s: %s\n", hostport, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd < 0) {
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			break;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		fprintf(stderr, "sim: cannot connect to %s: %s\n", hostport, strerror(errno));
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

int sim_listen(int port)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	if (fd < 0) {
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 8) != 0) {
		fprintf(stderr, "sim: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int sim_write_all(int fd, const uint8_t *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int sim_send(int fd, uint8_t type, const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
	static uint8_t out[CATS_STREAM_MAX_LEN + CATS_STREAM_OVERHEAD];
	int n = cats_stream_encode(type, a, na, b, nb, out, sizeof(out));

	if (n < 0) {
		return -1;
	}
	return sim_write_all(fd, out, (size_t)n);
}

int sim_read_key(const char *path, uint8_t key[16])
{
	struct stat st;
	char text[80];
	size_t n;
	FILE *f;

	if (stat(path, &st) != 0) {
		fprintf(stderr, "sim: key file %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		fprintf(stderr, "sim: key file %s may be read by others (chmod 600)\n", path);
		return -1;
	}
	f = fopen(path, "rb");
	if (f == NULL) {
		fprintf(stderr, "sim: key file %s: %s\n", path, strerror(errno));
		return -1;
	}
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	if (n == CATS_AUTH_KEY_LEN) { /* 16 raw bytes, unless they are hex digits */
		memcpy(key, text, CATS_AUTH_KEY_LEN);
	} else if (strlen(text) != n || cats_auth_parse_key(text, key) != 0) {
		fprintf(stderr, "sim: key file %s: not 32 hex digits or 16 raw bytes\n", path);
		memset(text, 0, sizeof(text));
		return -1;
	}
	memset(text, 0, sizeof(text));
	return 0;
}

uint8_t *sim_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long size;

	if (f == NULL) {
		fprintf(stderr, "sim: cannot open %s: %s\n", path, strerror(errno));
		return NULL;
	}
	if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		/* 16-byte aligned (the blob's tensors are read in place) */
		size_t cap = ((size_t)size + 16u) & ~(size_t)15u;

		void *mem = NULL;

		buf = posix_memalign(&mem, 16, cap) == 0 ? mem : NULL;
		if (buf != NULL && fread(buf, 1, (size_t)size, f) == (size_t)size) {
			*len = (size_t)size;
		} else {
			free(buf);
			buf = NULL;
		}
	}
	fclose(f);
	if (buf == NULL) {
		fprintf(stderr, "sim: cannot read %s\n", path);
	}
	return buf;
}

int sim_token(uint8_t *out, size_t cap)
{
	const char *hex = getenv(SIM_TOKEN_ENV);
	size_t n;

	if (hex == NULL || hex[0] == '\0') {
		return 0;
	}
	n = strlen(hex);
	if (n % 2 != 0 || n / 2 > cap) {
		fprintf(stderr, "sim: %s must be at most %zu bytes in hex\n", SIM_TOKEN_ENV, cap);
		return -1;
	}
	if (cats_hex_decode(hex, n, out) != 0) {
		fprintf(stderr, "sim: %s is not hex\n", SIM_TOKEN_ENV);
		return -1;
	}
	return (int)(n / 2);
}

uint32_t sim_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}
