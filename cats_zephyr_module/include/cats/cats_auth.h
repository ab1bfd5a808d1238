/*
 * Authenticated radio frames: AES-128-CCM* (IEEE 802.15.4 CCM*, RFC 3610 with L = 2) with a
 * per-swarm key, a replay window per sender, the claimed sender bound to the link source.
 * The layout is defined once, in proto/cats.proto ("Authenticated air frames"):
 *
 *   air frame = AirType (1) | message (protobuf, cleartext) | MIC (mic_len: 4 or 8)
 *   nonce (13, big endian) = source station (2) | inference id (4, the full 32 bits) |
 *                            AirType (1) | exchange (2) | fragment (4)
 *   AAD = partition tag (4, little endian; never sent) | AirType (1) | message
 *   the CCM* message to encrypt is empty: frames are authenticated, not encrypted.
 *
 * Stations: node d is station d, the gateway is station `nodes`. The nonce's fields come from
 * the message: ColumnFrame v2 (inference_id = the low 16 bits, exchange, fragment; no sender
 * field: the source is the link's), InputFrame
 * (inference_id, fragment), OutputFrame (inference_id, offset as the fragment). A ColumnFrame's
 * full 32-bit inference id is the one nearest the receiver's reference (its running inference)
 * with those low bits; since the MIC covers the full id, a frame captured 2^16 inferences ago,
 * or one whose id was rewritten, fails the MIC.
 *
 * Receiving (cats_auth_open), in order: malformed (no AirType, shorter than the MIC, header does
 * not scan), sender (link source not a station of this swarm, our own id, an OutputFrame's
 * claimed sender field != link source, an InputFrame not from the gateway station, a
 * ColumnFrame / OutputFrame from the gateway station, a ColumnFrame from a link that cannot
 * tell its source), mic (CCM* verification fails: another key, another partition,
 * any changed bit, a rewritten id), replay (authentic, but not after the newest authentic
 * frame of that sender). Only then is the sender's newest position advanced.
 *
 * Replay window: a sender transmits its frames in a strictly increasing order of position =
 * (inference id, rank, exchange, fragment), rank 0 for ColumnFrames and InputFrames, 1 for
 * OutputFrames (a node sends its output after its exchanges); the radio and the medium keep a
 * sender's frames in order. A receiver keeps the newest authentic position per sender and
 * rejects any frame at or before it: a replay of an older inference, and an exact repeat of
 * a frame (the same nonce) alike. Ids compare as 32-bit serial numbers.
 *
 * The crypto itself is the platform's (cats_ccm_*: mbed TLS on the host, M4 and Zephyr);
 * portable C99 here, no allocation.
 */
#ifndef CATS_AUTH_H_
#define CATS_AUTH_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CATS_AUTH_KEY_LEN 16
#define CATS_AUTH_NONCE_LEN 13
#define CATS_AUTH_MIC_DEFAULT 8
#ifndef CATS_AUTH_MAX_STATIONS
#define CATS_AUTH_MAX_STATIONS 65 /* up to 64 nodes + the gateway */
#endif
#define CATS_AUTH_MSG_MAX 255 /* longest message (AirType and MIC excluded) */
/* `src` of a link that cannot tell the sender (BLE until the advertisers use per-station
 * identity addresses): the claimed sender is taken as the source. The MIC still binds the
 * frame to it (the nonce holds it); only the link-layer cross-check is missing. A ColumnFrame
 * (v2) claims no sender, so such a link cannot carry ColumnFrames: rejected as `sender`. */
#define CATS_AUTH_SRC_CLAIMED 0xFFFEu

/* Returns of cats_auth_open < 0 (the reason is also counted). */
enum cats_auth_status {
	CATS_AUTH_MALFORMED = -1,
	CATS_AUTH_SENDER = -2,
	CATS_AUTH_MIC = -3,
	CATS_AUTH_REPLAY = -4,
};

/* The order is also tools/cats/wire/auth.py AuthStats (ctypes). */
struct cats_auth_stats {
	uint32_t accepted;
	uint32_t rejected_malformed;
	uint32_t rejected_sender;
	uint32_t rejected_mic;
	uint32_t rejected_replay;
};

/* The crypto port's key state: the library's CCM context with the AES key schedule, set up once
 * per key (cats_ccm_init) instead of per frame. Opaque storage; src/crypto/ccm_mbedtls.c checks
 * at compile time that mbedtls_ccm_context fits. The context carries per-operation state in
 * mbed TLS 3.x, so one must not be used by two threads at once. */
#define CATS_CCM_CTX_WORDS 32
struct cats_ccm {
	uint64_t ctx[CATS_CCM_CTX_WORDS];
};

/* ccm[] of struct cats_auth: InputFrames (opened on a node's link RX thread, sealed by the
 * gateway) use their own context; everything else (ColumnFrames, OutputFrames: the node's
 * service thread, the gateway's thread) the other. So no context is shared between threads. */
#define CATS_AUTH_CCM_INPUT 1

struct cats_auth {
	uint32_t tag;      /* partition tag (AAD) */
	uint16_t self;     /* our station id */
	uint16_t nodes;    /* the gateway is station `nodes` */
	uint8_t mic_len;   /* 4 or 8 */
	uint8_t seen[CATS_AUTH_MAX_STATIONS];      /* newest[] valid */
	uint32_t newest[CATS_AUTH_MAX_STATIONS];   /* newest authentic inference id per sender */
	uint64_t position[CATS_AUTH_MAX_STATIONS]; /* and its rank << 48 | exchange << 32 |
						    * fragment */
	struct cats_auth_stats stats;
	struct cats_ccm ccm[2]; /* [CATS_AUTH_CCM_INPUT]: InputFrames; [0]: the rest */
};

/* Header fields of an air message the nonce and the checks use. */
struct cats_auth_hdr {
	uint32_t inference; /* as carried (ColumnFrame: the low 16 bits) */
	uint32_t exchange;
	uint32_t sender;    /* claimed sender (OutputFrame); UINT32_MAX if none */
	uint32_t fragment;
	const uint8_t *payload; /* the `payload` bytes field (in the message), NULL if absent */
	uint32_t payload_len;
};

/* key: 16 bytes; mic_len 4 or 8; self: our station id (the gateway: nodes). CATS_OK / ARG
 * (CATS_ERR_UNSUPPORTED: the crypto library refused the key). Sets up the key schedules once:
 * mbed TLS's cipher layer allocates them, so call it once per struct, at start-up. */
int cats_auth_init(struct cats_auth *a, const uint8_t *key, uint8_t mic_len, uint32_t tag,
		   uint16_t self, uint16_t nodes);

/* Station id of the gateway. */
static inline uint16_t cats_auth_gateway(const struct cats_auth *a)
{
	return a->nodes;
}

/* Append the MIC to an air message of `type` (msg[0 .. len) is the protobuf message, without
 * the AirType byte) sent by us in inference `inference` (the full 32-bit id). msg must have
 * room for len + mic_len bytes. Returns len + mic_len or a negative cats_status. */
int cats_auth_seal(struct cats_auth *a, uint8_t type, uint32_t inference, uint8_t *msg,
		   size_t len, size_t cap);

/* Check a received air message of `type` (msg[0 .. len) = protobuf message + MIC) from link
 * source station `src`. `ref` is the receiver's reference inference id for ColumnFrames (its
 * running one). On success returns the message length without the MIC (>= 0) and, if
 * inference != NULL, the full inference id; otherwise a cats_auth_status (counted). */
int cats_auth_open(struct cats_auth *a, uint8_t type, uint16_t src, uint32_t ref,
		   const uint8_t *msg, size_t len, uint32_t *inference);

/* The same on a whole air frame (AirType byte first). */
static inline int cats_auth_open_air(struct cats_auth *a, uint16_t src, uint32_t ref,
				     const uint8_t *air, size_t len, uint32_t *inference)
{
	if (len < 1) {
		a->stats.rejected_malformed++;
		return CATS_AUTH_MALFORMED;
	}
	return cats_auth_open(a, air[0], src, ref, &air[1], len - 1, inference);
}

/* The full 32-bit id nearest `ref` whose low 16 bits are `low`. */
uint32_t cats_auth_expand_id(uint16_t low, uint32_t ref);

/* Scan the header fields of a message of `type` (no MIC), and find its payload field (the
 * last one wins, as in protobuf; the ColumnFrame parser of somegather.c is this). 0 or -1 (does
 * not scan: truncated, a varint over 10 bytes, a header field beyond 32 bits, a header or
 * payload field with the wrong wire type). */
int cats_auth_header(uint8_t type, const uint8_t *msg, size_t len, struct cats_auth_hdr *h);

/* The 13-byte nonce. */
void cats_auth_nonce(uint8_t out[CATS_AUTH_NONCE_LEN], uint16_t src, uint32_t inference,
		     uint8_t type, uint32_t exchange, uint32_t fragment);

/* Decode exactly `digits` hex digits (an even count) into digits / 2 bytes. 0 or -1. */
int cats_hex_decode(const char *hex, size_t digits, uint8_t *out);

/* Parse a key given as 32 hex digits (whitespace around it ignored). 0 or -1. */
int cats_auth_parse_key(const char *hex, uint8_t key[CATS_AUTH_KEY_LEN]);

/*
 * The crypto port: AES-128-CCM* (nonce of 7 .. 13 bytes, tag of 4, 8 or 16 bytes), from a
 * maintained library (src/crypto/ccm_mbedtls.c: mbed TLS 2.28 / 3.x). 0, or < 0 on failure
 * (decrypt: the tag does not verify; out is then zeroed). cats_ccm_init keeps the key schedule
 * in *c for cats_ccm_seal / cats_ccm_open; cats_ccm_encrypt / cats_ccm_decrypt are one-shot.
 */
int cats_ccm_init(struct cats_ccm *c, const uint8_t key[CATS_AUTH_KEY_LEN]);
void cats_ccm_free(struct cats_ccm *c);
int cats_ccm_seal(struct cats_ccm *c, const uint8_t *nonce, size_t nonce_len,
		  const uint8_t *aad, size_t aad_len, const uint8_t *in, uint8_t *out, size_t len,
		  uint8_t *tag, size_t tag_len);
int cats_ccm_open(struct cats_ccm *c, const uint8_t *nonce, size_t nonce_len,
		  const uint8_t *aad, size_t aad_len, const uint8_t *in, uint8_t *out, size_t len,
		  const uint8_t *tag, size_t tag_len);
int cats_ccm_encrypt(const uint8_t key[CATS_AUTH_KEY_LEN], const uint8_t *nonce,
		     size_t nonce_len, const uint8_t *aad, size_t aad_len, const uint8_t *in,
		     uint8_t *out, size_t len, uint8_t *tag, size_t tag_len);
int cats_ccm_decrypt(const uint8_t key[CATS_AUTH_KEY_LEN], const uint8_t *nonce,
		     size_t nonce_len, const uint8_t *aad, size_t aad_len, const uint8_t *in,
		     uint8_t *out, size_t len, const uint8_t *tag, size_t tag_len);

#ifdef __cplusplus
}
#endif

#endif /* CATS_AUTH_H_ */
