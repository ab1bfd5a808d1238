/*
 * mbed TLS configuration of the bare-metal M4 build: AES (ROM tables, fewer tables) and the
 * CCM* mode the radio frames' authentication uses (src/crypto/ccm_mbedtls.c), nothing else.
 */
#ifndef CATS_MBEDTLS_CONFIG_M4_H_
#define CATS_MBEDTLS_CONFIG_M4_H_

#define MBEDTLS_AES_C
#define MBEDTLS_AES_ROM_TABLES
#define MBEDTLS_AES_FEWER_TABLES
#define MBEDTLS_CIPHER_C
#define MBEDTLS_CCM_C

#include "mbedtls/check_config.h"

#endif /* CATS_MBEDTLS_CONFIG_M4_H_ */
