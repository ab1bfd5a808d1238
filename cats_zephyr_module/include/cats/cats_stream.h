/*
 * The framed byte stream of proto/cats.proto (serial, UART, sockets), both directions:
 *
 *   0xCA 0x75 | type (1) | length N (2, LE) | payload (N bytes) | CRC-16 (2, LE)
 *
 * CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no final xor; Python
 * binascii.crc_hqx(data, 0xFFFF)) over type, length and payload. A sender never sends
 * N > CATS_STREAM_MAX_LEN; the simulation link's messages (types 1-4) are at most
 * CATS_STREAM_SIM_MAX_LEN. A receiver accepts N up to its buffer (cats_stream_decoder_init);
 * after a longer length or a bad CRC it drops the first sync byte and hunts for the next
 * 0xCA 0x75 from the byte after it (so a message behind garbage that looked like a header is
 * still found). A false header with a plausible length makes the receiver wait for that many
 * bytes; where the line may carry garbage and then fall silent (a bridge link), the receiver
 * calls cats_stream_flush() once it has been idle for a while (cats_gateway_sim: 200 ms) to
 * give up the held partial message and rescan. tools/cats/wire/stream.py is the Python twin (same
 * bytes, same counters).
 *
 * Portable C99, no allocation: the decoder works in a buffer the caller provides.
 */
#ifndef CATS_STREAM_H_
#define CATS_STREAM_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CATS_STREAM_SYNC0 0xCAu
#define CATS_STREAM_SYNC1 0x75u
#define CATS_STREAM_HEADER 5u        /* sync 2 + type 1 + length 2 */
#define CATS_STREAM_OVERHEAD 7u      /* header + CRC 2 */
#define CATS_STREAM_MAX_LEN 8192u    /* largest payload any sender sends (a GatewayMessage) */
#define CATS_STREAM_SIM_MAX_LEN 1024u /* largest payload on the simulation link (types 1-4) */

/* Message types: what the payload is. */
enum cats_stream_type {
	CATS_STREAM_AIR = 1,      /* one radio frame: AirType byte + message */
	CATS_STREAM_HELLO = 2,    /* SimHello, station -> medium, first message */
	CATS_STREAM_SLOT_END = 3, /* SlotEnd, medium -> stations */
	CATS_STREAM_STATION = 4,  /* StationEvent, medium -> gateway */
	CATS_STREAM_GATEWAY = 8,  /* GatewayMessage, bridge <-> gateway */
};

/* The AirType dispatch byte that starts every radio frame (proto enum AirType). */
enum cats_air_type { CATS_AIR_COLUMN = 1, CATS_AIR_INPUT = 2, CATS_AIR_OUTPUT = 3 };

/* CRC-16/CCITT-FALSE update (start with 0xFFFF). */
uint16_t cats_stream_crc16(uint16_t crc, const uint8_t *p, size_t n);

/* Write the 5 header bytes for a `len`-byte payload of `type` into head[]; returns the CRC
 * state after type + length: continue it with cats_stream_crc16() over the payload and send
 * it (LE) after the payload. For senders that write the pieces without copying them. */
uint16_t cats_stream_header(uint8_t type, uint16_t len, uint8_t head[CATS_STREAM_HEADER]);

/* Encode one message into out: the header, the payload `a` (na bytes) and `b` (nb bytes,
 * may be NULL/0: e.g. an AirType byte and the message) and the CRC. Returns the number of
 * bytes written (na + nb + 7), or -1 when na + nb > CATS_STREAM_MAX_LEN or cap is too small. */
int cats_stream_encode(uint8_t type, const uint8_t *a, size_t na, const uint8_t *b, size_t nb,
		       uint8_t *out, size_t cap);

/* One decoded message; payload points into the decoder's buffer, valid until the next call
 * of cats_stream_decode(). */
struct cats_stream_msg {
	uint8_t type;
	uint16_t len;
	const uint8_t *payload;
};

struct cats_stream_decoder {
	uint8_t *buf;     /* the candidate message from its sync bytes on */
	size_t cap;       /* bytes of buf */
	size_t have;      /* bytes held in buf */
	size_t emitted;   /* bytes of the message returned last (removed on the next call) */
	uint16_t max_len; /* largest payload accepted: cap - 7 (at most 65535) */
	uint32_t messages;   /* messages returned */
	uint32_t bad_crc;    /* candidates with a wrong CRC */
	uint32_t bad_length; /* candidates with N > max_len */
	uint32_t skipped;    /* bytes dropped while hunting for sync (incl. rejected candidates) */
	uint32_t stalled;    /* partial candidates given up by cats_stream_flush() */
};

/* The decoder accepts payloads up to buf_size - 7 bytes (buf_size >= 7; sizes above
 * 65535 + 7 are not used). */
void cats_stream_decoder_init(struct cats_stream_decoder *d, uint8_t *buf, size_t buf_size);

/* Drop what is held (e.g. a new connection); counters are kept. */
void cats_stream_decoder_reset(struct cats_stream_decoder *d);

/* Consume bytes of data (len of them) until a message is complete. Returns 1 with *msg set
 * (then *used < len may leave bytes for the next call, which may also find a message already
 * held: call again with len 0 until it returns 0), or 0 when every byte was consumed and no
 * message is complete. *used (may be NULL) gets the bytes of data consumed. */
int cats_stream_decode(struct cats_stream_decoder *d, const uint8_t *data, size_t len,
		       size_t *used, struct cats_stream_msg *msg);

/* The line has been idle: the held partial message (if any) will not be completed. Drops its
 * first byte and rescans the rest, repeatedly. Returns 1 with *msg for a complete message found
 * in the held bytes (call again), 0 once nothing is held. */
int cats_stream_flush(struct cats_stream_decoder *d, struct cats_stream_msg *msg);

/* Bytes held for a message not complete yet (0: nothing to flush). */
static inline size_t cats_stream_pending(const struct cats_stream_decoder *d)
{
	return d->have - d->emitted;
}

#ifdef __cplusplus
}
#endif

#endif /* CATS_STREAM_H_ */
