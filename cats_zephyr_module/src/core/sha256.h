/*
 * SHA-256 (FIPS 180-4), small and portable: the node verifies its weight blob against the
 * digest in its manifest before trusting a single tensor. Internal to the core.
 */
#ifndef CATS_SHA256_H_
#define CATS_SHA256_H_

#include <stddef.h>
#include <stdint.h>

#define CATS_SHA256_BYTES 32

struct cats_sha256 {
	uint32_t h[8];
	uint64_t len;      /* bytes hashed so far */
	uint8_t buf[64];   /* partial block */
};

void cats_sha256_init(struct cats_sha256 *s);
void cats_sha256_update(struct cats_sha256 *s, const uint8_t *data, size_t len);
void cats_sha256_final(struct cats_sha256 *s, uint8_t out[CATS_SHA256_BYTES]);
/* One-shot digest of data[0..len). */
void cats_sha256(const uint8_t *data, size_t len, uint8_t out[CATS_SHA256_BYTES]);

#endif /* CATS_SHA256_H_ */
