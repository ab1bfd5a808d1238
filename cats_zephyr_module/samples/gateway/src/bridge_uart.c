/*
 * The bridge on hardware: the framed byte stream of cats/cats_stream.h (GatewayMessages,
 * stream type CATS_STREAM_GATEWAY) on a UART to the robot's computer, where the cats_ros
 * bridge node reads it (USB-CDC or a USB-serial adapter). The UART is the devicetree's
 * `cats,bridge-uart` chosen node, else the console's; the decoder skips anything that is not
 * a framed message (e.g. log lines sharing the console), so the stream survives them.
 */
#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/uart.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>

#include "bridge.h"
#include "cats/cats_gateway_service.h"
#include "cats/cats_stream.h"

LOG_MODULE_DECLARE(cats_gateway_sample);

#if DT_HAS_CHOSEN(cats_bridge_uart)
#define BRIDGE_UART DT_CHOSEN(cats_bridge_uart)
#else
#define BRIDGE_UART DT_CHOSEN(zephyr_console)
#endif

static const struct device *const uart = DEVICE_DT_GET(BRIDGE_UART);
static uint8_t dec_buf[CATS_STREAM_MAX_LEN + CATS_STREAM_OVERHEAD];
static struct cats_stream_decoder dec;
static uint8_t out[CATS_STREAM_MAX_LEN + CATS_STREAM_OVERHEAD];

int bridge_open(void)
{
	if (!device_is_ready(uart)) {
		LOG_ERR("bridge: UART %s not ready", uart->name);
		return -19; /* ENODEV */
	}
	cats_stream_decoder_init(&dec, dec_buf, sizeof(dec_buf));
	return 0;
}

int bridge_poll(int gateway_busy)
{
	unsigned char c;
	struct cats_stream_msg m;
	size_t used;

	/* Requests queue in the gateway (it answers "busy" beyond its queue), so bytes are read
	 * whether or not it is running one. */
	ARG_UNUSED(gateway_busy);
	while (uart_poll_in(uart, &c) == 0) {
		if (cats_stream_decode(&dec, &c, 1, &used, &m)) {
			(void)cats_gw_service_request(BRIDGE_CLIENT, m.type, m.payload, m.len);
			return 1;
		}
	}
	return 0;
}

int bridge_reply(uint32_t client, const uint8_t *msg, size_t len)
{
	int n = cats_stream_encode(CATS_STREAM_GATEWAY, msg, len, NULL, 0, out, sizeof(out));

	ARG_UNUSED(client);
	if (n < 0) {
		return -5;
	}
	for (int i = 0; i < n; i++) {
		uart_poll_out(uart, out[i]);
	}
	return 0;
}

void bridge_close(void)
{
}
