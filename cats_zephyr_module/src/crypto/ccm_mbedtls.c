/*
 * The crypto port of cats_auth (include/cats/cats_auth.h) on mbed TLS: its CCM* API
 * (mbedtls_ccm_star_encrypt_and_tag / mbedtls_ccm_star_auth_decrypt, present in mbed TLS 2.28
 * and 3.x) over its AES. Used by the host build (Debian libmbedtls-dev), the bare-metal M4 build
 * (mbed TLS sources, scripts/fetch_mbedtls.sh) and Zephyr (CONFIG_MBEDTLS).
 */
#include <string.h>

#include <mbedtls/ccm.h>

#include "cats/cats_auth.h"

/* struct cats_ccm holds the library's context (cats_auth.h). */
typedef char cats_ccm_ctx_fits[sizeof(mbedtls_ccm_context) <= sizeof(struct cats_ccm) ? 1 : -1];

static mbedtls_ccm_context *lib_ctx(struct cats_ccm *c)
{
	return (mbedtls_ccm_context *)(void *)c->ctx;
}

int cats_ccm_init(struct cats_ccm *c, const uint8_t key[CATS_AUTH_KEY_LEN])
{
	if (c == NULL || key == NULL) {
		return -1;
	}
	mbedtls_ccm_init(lib_ctx(c));
	if (mbedtls_ccm_setkey(lib_ctx(c), MBEDTLS_CIPHER_ID_AES, key, 8 * CATS_AUTH_KEY_LEN) != 0) {
		mbedtls_ccm_free(lib_ctx(c));
		return -1;
	}
	return 0;
}

void cats_ccm_free(struct cats_ccm *c)
{
	if (c != NULL) {
		mbedtls_ccm_free(lib_ctx(c));
	}
}

static int ccm_run(int decrypt, struct cats_ccm *c, const uint8_t *nonce, size_t nonce_len,
		   const uint8_t *aad, size_t aad_len, const uint8_t *in, uint8_t *out, size_t len,
		   uint8_t *tag, size_t tag_len)
{
	static const uint8_t none[1];
	uint8_t sink[1];
	int rc;

	if (c == NULL || nonce == NULL || tag == NULL || (len > 0 && (in == NULL || out == NULL))) {
		return -1;
	}
	if (len == 0) { /* authentication only: mbed TLS wants buffers even for 0 bytes */
		in = none;
		out = sink;
	}
	rc = decrypt ? mbedtls_ccm_star_auth_decrypt(lib_ctx(c), len, nonce, nonce_len, aad, aad_len,
						     in, out, tag, tag_len)
		     : mbedtls_ccm_star_encrypt_and_tag(lib_ctx(c), len, nonce, nonce_len, aad,
							aad_len, in, out, tag, tag_len);
	return rc == 0 ? 0 : -1;
}

int cats_ccm_seal(struct cats_ccm *c, const uint8_t *nonce, size_t nonce_len,
		  const uint8_t *aad, size_t aad_len, const uint8_t *in, uint8_t *out, size_t len,
		  uint8_t *tag, size_t tag_len)
{
	return ccm_run(0, c, nonce, nonce_len, aad, aad_len, in, out, len, tag, tag_len);
}

int cats_ccm_open(struct cats_ccm *c, const uint8_t *nonce, size_t nonce_len,
		  const uint8_t *aad, size_t aad_len, const uint8_t *in, uint8_t *out, size_t len,
		  const uint8_t *tag, size_t tag_len)
{
	uint8_t t[16];

	if (tag == NULL || tag_len > sizeof(t)) {
		return -1;
	}
	memcpy(t, tag, tag_len);
	return ccm_run(1, c, nonce, nonce_len, aad, aad_len, in, out, len, t, tag_len);
}

/* One-shot: a context for this call only. tag_out (encrypt) or tag_in (decrypt). */
static int one_shot(const uint8_t key[CATS_AUTH_KEY_LEN], const uint8_t *nonce, size_t nonce_len,
		    const uint8_t *aad, size_t aad_len, const uint8_t *in, uint8_t *out, size_t len,
		    uint8_t *tag_out, const uint8_t *tag_in, size_t tag_len)
{
	struct cats_ccm c;
	int rc;

	if (cats_ccm_init(&c, key) != 0) {
		return -1;
	}
	rc = tag_out != NULL ? cats_ccm_seal(&c, nonce, nonce_len, aad, aad_len, in, out, len,
					     tag_out, tag_len)
			     : cats_ccm_open(&c, nonce, nonce_len, aad, aad_len, in, out, len, tag_in,
					     tag_len);
	cats_ccm_free(&c);
	return rc;
}

int cats_ccm_encrypt(const uint8_t key[CATS_AUTH_KEY_LEN], const uint8_t *nonce,
		     size_t nonce_len, const uint8_t *aad, size_t aad_len, const uint8_t *in,
		     uint8_t *out, size_t len, uint8_t *tag, size_t tag_len)
{
	if (tag == NULL) {
		return -1;
	}
	return one_shot(key, nonce, nonce_len, aad, aad_len, in, out, len, tag, NULL, tag_len);
}

int cats_ccm_decrypt(const uint8_t key[CATS_AUTH_KEY_LEN], const uint8_t *nonce,
		     size_t nonce_len, const uint8_t *aad, size_t aad_len, const uint8_t *in,
		     uint8_t *out, size_t len, const uint8_t *tag, size_t tag_len)
{
	if (tag == NULL) {
		return -1;
	}
	return one_shot(key, nonce, nonce_len, aad, aad_len, in, out, len, NULL, tag, tag_len);
}
