/*
 * Authenticated radio frames (see include/cats/cats_auth.h and proto/cats.proto).
 * The Python mirror is tools/cats/wire/auth.py; tests/test_auth.py holds both to the same bytes.
 */
#include "cats/cats_auth.h"

#include <string.h>

#include "cats/cats_node.h"
#include "cats/cats_stream.h"

int cats_auth_init(struct cats_auth *a, const uint8_t *key, uint8_t mic_len, uint32_t tag,
		   uint16_t self, uint16_t nodes)
{
	if (a == NULL || key == NULL || (mic_len != 4 && mic_len != 8) ||
	    nodes + 1u > CATS_AUTH_MAX_STATIONS || self > nodes) {
		return CATS_ERR_ARG;
	}
	memset(a, 0, sizeof(*a));
	if (cats_ccm_init(&a->ccm[0], key) != 0) {
		return CATS_ERR_UNSUPPORTED;
	}
	if (cats_ccm_init(&a->ccm[CATS_AUTH_CCM_INPUT], key) != 0) {
		cats_ccm_free(&a->ccm[0]);
		return CATS_ERR_UNSUPPORTED;
	}
	a->mic_len = mic_len;
	a->tag = tag;
	a->self = self;
	a->nodes = nodes;
	return CATS_OK;
}

uint32_t cats_auth_expand_id(uint16_t low, uint32_t ref)
{
	uint32_t id = (ref & 0xFFFF0000u) | low;
	int32_t d = (int32_t)(id - ref);

	if (d > 0x8000) {
		id -= 0x10000u;
	} else if (d <= -0x8000) {
		id += 0x10000u;
	}
	return id;
}

void cats_auth_nonce(uint8_t out[CATS_AUTH_NONCE_LEN], uint16_t src, uint32_t inference,
		     uint8_t type, uint32_t exchange, uint32_t fragment)
{
	out[0] = (uint8_t)(src >> 8);
	out[1] = (uint8_t)src;
	for (int i = 0; i < 4; i++) {
		out[2 + i] = (uint8_t)(inference >> (24 - 8 * i));
		out[9 + i] = (uint8_t)(fragment >> (24 - 8 * i));
	}
	out[6] = type;
	out[7] = (uint8_t)(exchange >> 8);
	out[8] = (uint8_t)exchange;
}

/* One varint; 0 or -1 (truncated, or longer than 10 bytes). */
static int scan_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; shift < 70; shift += 7) {
		uint8_t b;

		if (*pos >= len) {
			return -1;
		}
		b = p[(*pos)++];
		if (shift < 64) {
			*v |= (uint64_t)(b & 0x7Fu) << shift;
		}
		if (!(b & 0x80u)) {
			return 0;
		}
	}
	return -1;
}

/* Field numbers of (inference, exchange, sender, fragment, payload) per AirType; 0 = not
 * carried. */
static int header_fields(uint8_t type, uint32_t f[5])
{
	switch (type) {
	case CATS_AIR_COLUMN: /* format v2: no sender field (the link source is the sender) */
		f[0] = 11, f[1] = 12, f[2] = 0, f[3] = 13, f[4] = 14;
		return 0;
	case CATS_AIR_INPUT:
		f[0] = 1, f[1] = 0, f[2] = 0, f[3] = 3, f[4] = 6;
		return 0;
	case CATS_AIR_OUTPUT:
		f[0] = 1, f[1] = 0, f[2] = 3, f[3] = 6, f[4] = 7;
		return 0;
	default:
		return -1;
	}
}

int cats_auth_header(uint8_t type, const uint8_t *msg, size_t len, struct cats_auth_hdr *h)
{
	uint32_t f[5];
	uint32_t *dst[4];
	size_t pos = 0;

	if (header_fields(type, f) != 0 || (msg == NULL && len > 0)) {
		return -1;
	}
	dst[0] = &h->inference, dst[1] = &h->exchange, dst[2] = &h->sender, dst[3] = &h->fragment;
	memset(h, 0, sizeof(*h));
	h->sender = f[2] ? 0u : UINT32_MAX;
	while (pos < len) {
		uint64_t key, v;
		uint32_t field;
		int wire, mine = -1;

		if (scan_varint(msg, len, &pos, &key) != 0 || (key >> 3) == 0 ||
		    (key >> 3) > 0x1FFFFFFFu) {
			return -1;
		}
		field = (uint32_t)(key >> 3);
		wire = (int)(key & 7u);
		for (int i = 0; i < 4; i++) {
			if (f[i] == field) {
				mine = i;
			}
		}
		if ((mine >= 0 && wire != 0) || (field == f[4] && wire != 2)) {
			return -1; /* a header field with the wrong wire type (nanopb refuses it) */
		}
		switch (wire) {
		case 0:
			if (scan_varint(msg, len, &pos, &v) != 0) {
				return -1;
			}
			if (mine >= 0) {
				if (v > UINT32_MAX) {
					return -1;
				}
				*dst[mine] = (uint32_t)v;
			}
			break;
		case 1:
			if (len - pos < 8) {
				return -1;
			}
			pos += 8;
			break;
		case 2:
			if (scan_varint(msg, len, &pos, &v) != 0 || v > len - pos) {
				return -1;
			}
			if (field == f[4]) {
				h->payload = &msg[pos];
				h->payload_len = (uint32_t)v;
			}
			pos += (size_t)v;
			break;
		case 5:
			if (len - pos < 4) {
				return -1;
			}
			pos += 4;
			break;
		default:
			return -1;
		}
	}
	return 0;
}

/* AAD = partition tag (LE) | AirType | message. */
static size_t build_aad(uint8_t *aad, uint32_t tag, uint8_t type, const uint8_t *msg,
			size_t len)
{
	for (int i = 0; i < 4; i++) {
		aad[i] = (uint8_t)(tag >> (8 * i));
	}
	aad[4] = type;
	memcpy(&aad[5], msg, len);
	return len + 5u;
}

/* The key state of an air type's frames (cats_auth.h CATS_AUTH_CCM_INPUT: one per thread). */
static struct cats_ccm *ccm_for(struct cats_auth *a, uint8_t type)
{
	return &a->ccm[type == CATS_AIR_INPUT ? CATS_AUTH_CCM_INPUT : 0];
}

int cats_auth_seal(struct cats_auth *a, uint8_t type, uint32_t inference, uint8_t *msg,
		   size_t len, size_t cap)
{
	uint8_t aad[5 + CATS_AUTH_MSG_MAX];
	uint8_t nonce[CATS_AUTH_NONCE_LEN];
	struct cats_auth_hdr h;
	size_t aad_len;

	if (a == NULL || msg == NULL || len > CATS_AUTH_MSG_MAX || cap < len + a->mic_len ||
	    cats_auth_header(type, msg, len, &h) != 0) {
		return CATS_ERR_ARG;
	}
	if (type == CATS_AIR_COLUMN && h.inference != (inference & 0xFFFFu)) {
		return CATS_ERR_ARG;
	}
	if (type != CATS_AIR_COLUMN && h.inference != inference) {
		return CATS_ERR_ARG;
	}
	cats_auth_nonce(nonce, a->self, inference, type, h.exchange, h.fragment);
	aad_len = build_aad(aad, a->tag, type, msg, len);
	if (cats_ccm_seal(ccm_for(a, type), nonce, sizeof(nonce), aad, aad_len, NULL, NULL, 0,
			  &msg[len], a->mic_len) != 0) {
		return CATS_ERR_UNSUPPORTED;
	}
	return (int)(len + a->mic_len);
}

static int reject(uint32_t *counter, int status)
{
	(*counter)++;
	return status;
}

int cats_auth_open(struct cats_auth *a, uint8_t type, uint16_t src, uint32_t ref,
		   const uint8_t *msg, size_t len, uint32_t *inference)
{
	uint8_t aad[5 + CATS_AUTH_MSG_MAX];
	uint8_t nonce[CATS_AUTH_NONCE_LEN];
	struct cats_auth_hdr h;
	size_t body, aad_len;
	uint32_t id;
	uint64_t pos;
	const uint16_t gw = a->nodes;

	if (msg == NULL || len < a->mic_len || len - a->mic_len > CATS_AUTH_MSG_MAX) {
		return reject(&a->stats.rejected_malformed, CATS_AUTH_MALFORMED);
	}
	body = len - a->mic_len;
	if (cats_auth_header(type, msg, body, &h) != 0) {
		return reject(&a->stats.rejected_malformed, CATS_AUTH_MALFORMED);
	}
	if (src == CATS_AUTH_SRC_CLAIMED) {
		/* a ColumnFrame names no sender: only a link that tells the source carries them */
		src = type == CATS_AIR_INPUT	? gw
		      : type == CATS_AIR_COLUMN ? (uint16_t)(gw + 1u)
						: (uint16_t)(h.sender > gw ? gw + 1u : h.sender);
	}
	/* the link source must be a station of this swarm, not us; a claimed sender (OutputFrame)
	 * must be the link source */
	if (src > gw || src == a->self || (type == CATS_AIR_INPUT && src != gw) ||
	    (type != CATS_AIR_INPUT && src == gw) ||
	    (type == CATS_AIR_OUTPUT && h.sender != src)) {
		return reject(&a->stats.rejected_sender, CATS_AUTH_SENDER);
	}
	id = type == CATS_AIR_COLUMN ? cats_auth_expand_id((uint16_t)h.inference, ref)
				     : h.inference;
	if (type == CATS_AIR_COLUMN && h.inference > 0xFFFFu) {
		return reject(&a->stats.rejected_malformed, CATS_AUTH_MALFORMED);
	}
	cats_auth_nonce(nonce, src, id, type, h.exchange, h.fragment);
	aad_len = build_aad(aad, a->tag, type, msg, body);
	if (cats_ccm_open(ccm_for(a, type), nonce, sizeof(nonce), aad, aad_len, NULL, NULL, 0,
			  &msg[body], a->mic_len) != 0) {
		return reject(&a->stats.rejected_mic, CATS_AUTH_MIC);
	}
	pos = (uint64_t)(type == CATS_AIR_OUTPUT) << 48 | (uint64_t)(h.exchange & 0xFFFFu) << 32 |
	      h.fragment;
	if (a->seen[src] && ((int32_t)(id - a->newest[src]) < 0 ||
			     (id == a->newest[src] && pos <= a->position[src]))) {
		return reject(&a->stats.rejected_replay, CATS_AUTH_REPLAY);
	}
	a->seen[src] = 1;
	a->newest[src] = id;
	a->position[src] = pos;
	a->stats.accepted++;
	if (inference != NULL) {
		*inference = id;
	}
	return (int)body;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9') {
		return c - '0';
	}
	if (c >= 'a' && c <= 'f') {
		return c - 'a' + 10;
	}
	if (c >= 'A' && c <= 'F') {
		return c - 'A' + 10;
	}
	return -1;
}

int cats_hex_decode(const char *hex, size_t digits, uint8_t *out)
{
	size_t i;

	if (digits % 2 != 0) {
		return -1;
	}
	for (i = 0; i < digits / 2; i++) {
		int hi = hex_digit(hex[2 * i]), lo = hi < 0 ? -1 : hex_digit(hex[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			return -1;
		}
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int cats_auth_parse_key(const char *hex, uint8_t key[CATS_AUTH_KEY_LEN])
{
	if (hex == NULL) {
		return -1;
	}
	while (is_space(*hex)) {
		hex++;
	}
	if (cats_hex_decode(hex, 2 * CATS_AUTH_KEY_LEN, key) != 0) {
		return -1;
	}
	hex += 2 * CATS_AUTH_KEY_LEN;
	while (is_space(*hex)) {
		hex++;
	}
	return *hex == '\0' ? 0 : -1;
}
