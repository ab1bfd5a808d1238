/*
 * The bridge on nrf52_bsim / native_sim: files of the host instead of a UART, for driving a
 * BabbleSim swarm from the host (`cats sim --backend bsim`, tools/cats/sim/bsim.py):
 *
 *   -cats_requests=FILE  framed GatewayMessages (cats/cats_stream.h), the InferRequests; the
 *                        gateway takes the next one when the previous one has its answer
 *   -cats_results=FILE   the answers, framed GatewayMessages (the file must exist)
 *   -cats_times=FILE     one text line per answer: "<request taken> <answer sent>" in
 *                        microseconds of simulated time (the file must exist)
 *   -cats_start_ms=MS    simulated time before the first request (the nodes boot)
 *
 * When the requests are all answered the simulation ends (posix_exit). The host is reached
 * through the native simulator's trampolines (nsi_host_*): the Zephyr side of these boards
 * is built against its own C library and cannot call the host's directly.
 */
#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>

#include <cmdline.h>
#include <nsi_host_trampolines.h>
#include <posix_board_if.h>
#include <posix_native_task.h>

#include "bridge.h"
#include "cats/cats_gateway_service.h"
#include "cats/cats_stream.h"

LOG_MODULE_DECLARE(cats_gateway_sample);

/* Host open() flags: O_RDONLY and O_WRONLY have these values on every host and C library
 * (O_CREAT does not, hence "the file must exist"). */
#define HOST_O_RDONLY 0
#define HOST_O_WRONLY 1

static char *requests_path;
static char *results_path;
static char *times_path;
#define START_MS_DEFAULT 500
static uint32_t start_ms = UINT32_MAX; /* the argument parser's "not given" */
static int req_fd = -1, res_fd = -1, times_fd = -1;
static bool eof;
static int64_t taken_ticks;

static uint8_t dec_buf[CATS_STREAM_MAX_LEN + CATS_STREAM_OVERHEAD];
static struct cats_stream_decoder dec;
static uint8_t chunk[256];
static size_t chunk_len, chunk_pos;
static uint8_t out[CATS_STREAM_MAX_LEN + CATS_STREAM_OVERHEAD];

static void add_options(void)
{
	static struct args_struct_t opts[] = {
		{.option = "cats_requests", .name = "file", .type = 's',
		 .dest = (void *)&requests_path, .descript = "framed InferRequests to serve"},
		{.option = "cats_results", .name = "file", .type = 's',
		 .dest = (void *)&results_path, .descript = "framed answers (existing file)"},
		{.option = "cats_times", .name = "file", .type = 's', .dest = (void *)&times_path,
		 .descript = "simulated time of each request and answer, us (existing file)"},
		{.option = "cats_start_ms", .name = "ms", .type = 'u', .dest = (void *)&start_ms,
		 .descript = "simulated time before the first request (default 500)"},
		ARG_TABLE_ENDMARKER,
	};

	native_add_command_line_opts(opts);
}

NATIVE_TASK(add_options, PRE_BOOT_1, 100);

static int open_or_fail(const char *path, int flags, const char *what)
{
	int fd;

	if (path == NULL) {
		LOG_ERR("bridge: -cats_%s=FILE is missing", what);
		return -1;
	}
	fd = nsi_host_open(path, flags);
	if (fd < 0) {
		LOG_ERR("bridge: cannot open %s", path);
	}
	return fd;
}

int bridge_open(void)
{
	req_fd = open_or_fail(requests_path, HOST_O_RDONLY, "requests");
	res_fd = open_or_fail(results_path, HOST_O_WRONLY, "results");
	times_fd = open_or_fail(times_path, HOST_O_WRONLY, "times");
	if (req_fd < 0 || res_fd < 0 || times_fd < 0) {
		return -2;
	}
	if (start_ms == UINT32_MAX) {
		start_ms = START_MS_DEFAULT;
	}
	cats_stream_decoder_init(&dec, dec_buf, sizeof(dec_buf));
	LOG_INF("bridge: requests from %s, first at %u ms", requests_path, start_ms);
	return 0;
}

int bridge_poll(int gateway_busy)
{
	struct cats_stream_msg m;
	size_t used;

	if (eof) {
		return -1;
	}
	if (gateway_busy || k_uptime_get() < start_ms) {
		return 0;
	}
	for (;;) {
		if (chunk_pos == chunk_len) {
			long n = nsi_host_read(req_fd, chunk, sizeof(chunk));

			if (n <= 0) {
				eof = true;
				return -1;
			}
			chunk_len = (size_t)n;
			chunk_pos = 0;
		}
		if (cats_stream_decode(&dec, &chunk[chunk_pos], chunk_len - chunk_pos, &used, &m)) {
			chunk_pos += used;
			taken_ticks = k_uptime_ticks();
			(void)cats_gw_service_request(BRIDGE_CLIENT, m.type, m.payload, m.len);
			return 1;
		}
		chunk_pos = chunk_len;
	}
}

int bridge_reply(uint32_t client, const uint8_t *msg, size_t len)
{
	char line[48];
	int n = cats_stream_encode(CATS_STREAM_GATEWAY, msg, len, NULL, 0, out, sizeof(out));

	ARG_UNUSED(client);
	if (n < 0 || nsi_host_write(res_fd, out, (unsigned long)n) != n) {
		return -5;
	}
	n = snprintk(line, sizeof(line), "%llu %llu\n",
		     (unsigned long long)k_ticks_to_us_floor64(taken_ticks),
		     (unsigned long long)k_ticks_to_us_floor64(k_uptime_ticks()));
	(void)nsi_host_write(times_fd, line, (unsigned long)n);
	return 0;
}

void bridge_close(void)
{
	nsi_host_close(req_fd);
	nsi_host_close(res_fd);
	nsi_host_close(times_fd);
	posix_exit(0);
}
