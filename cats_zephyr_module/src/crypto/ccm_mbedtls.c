/*
 * The crypto port of cats_auth (include/cats/cats_auth.h) on mbed TLS: its CCM* API
 * (mbedtls_ccm_star_encrypt_and_tag / mbedtls_ccm_star_auth_decrypt, present in mbed TLS 2.28
 * and 3.x) over its AES. Used by the host build (Debian libmbedtls-dev), the bare-metal M4 build
 * (mbed TLS sources, scripts/fetch_mbedtls.sh) and Zephyr (CONFIG_MBEDTLS).
 */
#include <string.h>

#include <mbedtls/ccm.h>

#include "cats/cats_auth.h"

static int ccm_run(int decrypt, const uint8_t key[CATS_AUTH_KEY_LEN], const uint8_t *nonce,
		   size_t nonce_len, const uint8_t *aad, size_t aad_len, const uint8_t *in,
		   uint8_t *out, size_t len, uint8_t *tag, size_t tag_len)
{
	static const uint8_t none[1];
	uint8_t sink[1];
	mbedtls_ccm_context ctx;
	int rc;

	if (key == NULL || nonce == NULL || tag == NULL || (len > 0 && (in == NULL || out == NULL))) {
		return -1;
	}
	if (len == 0) { /* authentication only: mbed TLS wants buffers even for 0 bytes */
		in = none;
		out = sink;
	}
	mbedtls_ccm_init(&ctx);
	rc = mbedtls_ccm_setkey(&ctx, MBEDTLS_CIPHER_ID_AES, key, 8 * CATS_AUTH_KEY_LEN);
	if (rc == 0) {
		rc = decrypt ? mbedtls_ccm_star_auth_decrypt(&ctx, len, nonce, nonce_len, aad,
							     aad_len, in, out, tag, tag_len)
			     : mbedtls_ccm_star_encrypt_and_tag(&ctx, len, nonce, nonce_len, aad,
								aad_len, in, out, tag, tag_len);
	}
	mbedtls_ccm_free(&ctx);
	return rc == 0 ? 0 : -1;
}

int cats_ccm_encrypt(const uint8_t key[CATS_AUTH_KEY_LEN], const uint8_t *nonce,
		     size_t nonce_len, const uint8_t *aad, size_t aad_len, const uint8_t *in,
		     uint8_t *out, size_t len, uint8_t *tag, size_t tag_len)
{
	return ccm_run(0, key, nonce, nonce_len, aad, aad_len, in, out, len, tag, tag_len);
}

int cats_ccm_decrypt(const uint8_t key[CATS_AUTH_KEY_LEN], const uint8_t *nonce,
		     size_t nonce_len, const uint8_t *aad, size_t aad_len, const uint8_t *in,
		     uint8_t *out, size_t len, const uint8_t *tag, size_t tag_len)
{
	uint8_t t[16];

	if (tag == NULL || tag_len > sizeof(t)) {
		return -1;
	}
	memcpy(t, tag, tag_len);
	return ccm_run(1, key, nonce, nonce_len, aad, aad_len, in, out, len, t, tag_len);
}
