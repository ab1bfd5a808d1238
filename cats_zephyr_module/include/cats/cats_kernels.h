/*
 * Integer kernels of the node runtime, bit-exact with tools/cats/quant/qref.py.
 *
 * Every function here is the C spelling of one qref primitive (named in its comment); the
 * arithmetic is the same integer arithmetic, with int64 wherever qref computes in int64, so
 * results agree bit for bit on every platform. Tensors are int8, row-major (rows x cols),
 * per-tensor scale, zero point 0; weights are stored output-major (out x in) so each output is
 * one contiguous dot product.
 *
 * Portable C99, no allocation, no OS calls. cats_matmul_s8() uses the Cortex-M4 DSP
 * extension (SXTB16 + SMLAD, two 16-bit MACs per instruction) where __ARM_FEATURE_DSP is
 * defined, with its inner loops in Thumb-2 assembly (GCC/Clang inline asm) when compiled as
 * Thumb-2; the plain C path gives identical results because integer sums are exact.
 */
#ifndef CATS_KERNELS_H_
#define CATS_KERNELS_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CATS_QMAX 127         /* int8 tensors are symmetric: [-127, 127] */
#define CATS_LN_NORM_BITS 16  /* LayerNorm: normalised value carried as y * 2^16 */
#define CATS_LN_INV_BITS 31   /* LayerNorm: 1/r carried as floor(2^31 / r) */
#define CATS_EXP_BITS 15      /* softmax: exp table in Q15 */
#define CATS_SOFTMAX_DIFF_MAX 255

/* qref.EXP_LUT: round(2^15 * exp(-t / 16)), t = 0..255 (logits are in 1/16 nat). */
extern const uint16_t cats_exp_lut[256];

/* Whether cats_matmul_s8() takes the SXTB16/SMLAD path (1) or plain C (0) in this build.
 * CATS_DSP_EMULATE builds the DSP path on any host with C stand-ins for the two
 * instructions, so the tests can check it against the plain path. */
#if defined(__ARM_FEATURE_DSP) || defined(CATS_DSP_EMULATE)
#define CATS_HAVE_DSP_PATH 1
#else
#define CATS_HAVE_DSP_PATH 0
#endif

/* Scratch bytes cats_matmul_s8() needs for `in` inputs and `out` outputs (any number of rows).
 * The DSP path widens int8 rows to 16 bits for SMLAD, zero-padded to K = CATS_MATMUL_K(in)
 * inputs: one token pair (4 K bytes) and the weight rows of one block of CATS_MATMUL_OB(out)
 * outputs (2 K bytes each), plus 24 bytes per output of the block (requantisation constants
 * and dot products). Blocks hold at most CATS_MATMUL_OUT_BLOCK outputs (more outputs: several
 * blocks, each re-widening the tokens). Reserved on every build so the memory plan is the same
 * everywhere; cats_matmul_s8_scratch_bytes() returns the same number. */
#define CATS_MATMUL_OUT_BLOCK 16u
#define CATS_MATMUL_K(in) (((size_t)(in) + 3u) & ~(size_t)3u)
#define CATS_MATMUL_OB(out)                                                                 \
	((size_t)(out) < CATS_MATMUL_OUT_BLOCK ? (((size_t)(out) + 1u) & ~(size_t)1u)           \
					       : (size_t)CATS_MATMUL_OUT_BLOCK)
#define CATS_MATMUL_SCRATCH_BYTES(in, out)                                                  \
	(4u * CATS_MATMUL_K(in) + CATS_MATMUL_OB(out) * (2u * CATS_MATMUL_K(in) + 24u))

/* qref shifts right arithmetically (floor). C99 leaves >> of a negative value
 * implementation-defined; GCC, Clang, armclang and IAR all define it as the arithmetic shift,
 * and this check keeps it that way for any other compiler. */
#if (-1 >> 1) != -1 || (-8 >> 2) != -2
#error "cats kernels need an arithmetic right shift of negative integers"
#endif

/* floor(v / 2^sh), 0 <= sh <= 63. */
static inline int64_t cats_asr64(int64_t v, unsigned sh)
{
	return v >> sh;
}

/* qref.requant: (acc * m + 2^(sh-1)) >> sh, int64, rounding half up; 1 <= sh <= 62.
 * The caller keeps |acc * m| < 2^62 (true for every tensor the runtime produces). */
static inline int64_t cats_requant(int64_t acc, int32_t m, int32_t sh)
{
	return cats_asr64(acc * (int64_t)m + ((int64_t)1 << (sh - 1)), (unsigned)sh);
}

/* qref.sat8: clamp to [-127, 127]. */
static inline int8_t cats_sat8(int64_t v)
{
	return (int8_t)(v > CATS_QMAX ? CATS_QMAX : (v < -CATS_QMAX ? -CATS_QMAX : v));
}

/* qref.isqrt: floor(sqrt(v)), exact for every 64-bit v (bitwise; the M4 has no double FPU). */
uint32_t cats_isqrt64(uint64_t v);

/* qref.linear: y[r][o] = sat8(requant(sum_c x[r][c] * w[o][c] + bias[o], m[o], sh[o])).
 * x: rows x in, w: out x in, y: rows x out (must not overlap x). `scratch` must hold
 * CATS_MATMUL_SCRATCH_BYTES(in, out) bytes, 8-byte aligned (unused by the plain C path);
 * in <= 65535 keeps the int32 sum exact. */
void cats_matmul_s8(const int8_t *x, int rows, int in, const int8_t *w, int out,
		    const int32_t *bias, const int32_t *m, const int32_t *sh, int8_t *y,
		    void *scratch);
/* CATS_MATMUL_SCRATCH_BYTES(in, out) as a function (for bindings that cannot see macros). */
size_t cats_matmul_s8_scratch_bytes(int in, int out);
/* The two implementations behind cats_matmul_s8(), exposed for the tests. */
void cats_matmul_s8_c(const int8_t *x, int rows, int in, const int8_t *w, int out,
		      const int32_t *bias, const int32_t *m, const int32_t *sh, int8_t *y);
#if CATS_HAVE_DSP_PATH
void cats_matmul_s8_dsp(const int8_t *x, int rows, int in, const int8_t *w, int out,
			const int32_t *bias, const int32_t *m, const int32_t *sh, int8_t *y,
			void *scratch);
#endif

/* qref.layer_norm: partial LayerNorm of each row of x (rows x cols) over the present columns
 * (present[c] != 0; NULL = all present). Absent outputs are 0. m, sh, beta per column;
 * eps_q8 >= 0. y may be x (in place). */
void cats_layer_norm_s8(const int8_t *x, int rows, int cols, const uint8_t *present,
			const int32_t *m, const int32_t *sh, const int32_t *beta, int32_t eps_q8,
			int8_t *y);

/* qref.softmax of one row of n logits (1/16 nat) -> probabilities in 1/128. valid[j] != 0
 * marks entries taking part (NULL = all); the others get 0. */
void cats_softmax_s8(const int64_t *logits, const uint8_t *valid, int n, int8_t *p);

/* qref.attention of the node's own heads. q, k, v: n x width (width = heads * head_dim),
 * row-major. The result overwrites q. Scratch: logits n int64, p n int8. */
void cats_attention_s8(int8_t *q, const int8_t *k, const int8_t *v, int n, int width,
		       int head_dim, int causal, int32_t ml, int32_t shl, int32_t ma, int32_t sha,
		       int64_t *logits, int8_t *p);

/* qref.add: y = sat8((x * mx + o * mo + 2^(sh-1)) >> sh); y may be x or o. */
void cats_add_s8(const int8_t *x, int32_t mx, const int8_t *o, int32_t mo, int32_t sh, int n,
		 int8_t *y);

/* FFN activation table: y[i] = lut[x[i] + 128]; y may be x. */
void cats_lut_s8(const int8_t *lut, const int8_t *x, int n, int8_t *y);

/* Classification pooling: y[c] = sat8(requant(sum_r x[r][c], m, sh)), x rows x cols. */
void cats_pool_s8(const int8_t *x, int rows, int cols, int32_t m, int32_t sh, int8_t *y);

#ifdef __cplusplus
}
#endif

#endif /* CATS_KERNELS_H_ */
