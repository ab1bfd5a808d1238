/*
 * Integer kernels, bit-exact with tools/cats/quant/qref.py (see cats_kernels.h).
 */
#include "cats/cats_kernels.h"

#include <string.h>

const uint16_t cats_exp_lut[256] = {
	32768, 30783, 28918, 27166, 25520, 23974, 22521, 21157, 19875, 18671, 17539, 16477,
	15479, 14541, 13660, 12832, 12055, 11324, 10638, 9994, 9388, 8819, 8285, 7783,
	7312, 6869, 6452, 6061, 5694, 5349, 5025, 4721, 4435, 4166, 3914, 3676,
	3454, 3244, 3048, 2863, 2690, 2527, 2374, 2230, 2095, 1968, 1849, 1737,
	1631, 1533, 1440, 1352, 1271, 1194, 1121, 1053, 990, 930, 873, 820,
	771, 724, 680, 639, 600, 564, 530, 498, 467, 439, 412, 387,
	364, 342, 321, 302, 283, 266, 250, 235, 221, 207, 195, 183,
	172, 162, 152, 143, 134, 126, 118, 111, 104, 98, 92, 86,
	81, 76, 72, 67, 63, 59, 56, 52, 49, 46, 43, 41,
	38, 36, 34, 32, 30, 28, 26, 25, 23, 22, 21, 19,
	18, 17, 16, 15, 14, 13, 12, 12, 11, 10, 10, 9,
	9, 8, 8, 7, 7, 6, 6, 6, 5, 5, 5, 4,
	4, 4, 4, 3, 3, 3, 3, 3, 2, 2, 2, 2,
	2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0,
};

uint32_t cats_isqrt64(uint64_t v)
{
	/* Digit-by-digit (base 4) square root: exact, no division, no floating point. */
	uint64_t rem = v, root = 0, bit = (uint64_t)1 << 62;

	while (bit > rem) {
		bit >>= 2;
	}
	while (bit != 0) {
		if (rem >= root + bit) {
			rem -= root + bit;
			root = (root >> 1) + bit;
		} else {
			root >>= 1;
		}
		bit >>= 2;
	}
	return (uint32_t)root;
}

/*
 * One output value, qref's sat8(requant(dot + bias, m, sh)). The product (dot + bias) * m is
 * formed as dot * m + bias * m (SMULL + SMLAL on the M4; each term < 2^62, no overflow).
 * For sh > 32 (the usual case: the scales of a layer give sh around 35 to 45) the shifted
 * value only depends on the high word: the low word is less than one unit of it and cannot
 * change floor((p + 2^(sh-1)) / 2^sh), and adding 2^(sh-1) = 2^(k-1) * 2^32 only touches the
 * high word. That avoids a 64-bit variable shift, which the M4 does not have.
 */
static inline int8_t finish(int32_t dot, int32_t bias, int32_t m, int32_t sh)
{
	const int64_t p = (int64_t)dot * m + (int64_t)bias * m;

	if (sh > 32) {
		const int32_t k = sh - 32; /* 1..30 */
		/* |dot| < 2^30 (in <= 65535), so |p| < 2^61 + 2^62: hi + 2^29 fits in int32. */
		const int32_t hi = (int32_t)(p >> 32);
		const int32_t r = (hi + ((int32_t)1 << (k - 1))) >> k;

		return (int8_t)(r > CATS_QMAX ? CATS_QMAX : (r < -CATS_QMAX ? -CATS_QMAX : r));
	}
	return cats_sat8((p + ((int64_t)1 << (sh - 1))) >> sh);
}

void cats_matmul_s8_c(const int8_t *x, int rows, int in, const int8_t *w, int out,
		      const int32_t *bias, const int32_t *m, const int32_t *sh, int8_t *y)
{
	for (int r = 0; r < rows; r++) {
		const int8_t *xr = x + (size_t)r * in;

		for (int o = 0; o < out; o++) {
			const int8_t *wo = w + (size_t)o * in;
			int32_t dot = 0;

			for (int c = 0; c < in; c++) {
				dot += (int32_t)xr[c] * wo[c];
			}
			y[(size_t)r * out + o] = finish(dot, bias[o], m[o], sh[o]);
		}
	}
}

#if CATS_HAVE_DSP_PATH

#if defined(__ARM_FEATURE_DSP) && !defined(CATS_DSP_EMULATE)
#include <arm_acle.h>

/* SXTB16: bytes 0 and 2 sign-extended into the two halfwords. */
static inline uint32_t sxtb16(uint32_t v)
{
	return (uint32_t)__sxtb16((int32_t)v);
}

/* SXTB16 with ROR #8: bytes 1 and 3 (one instruction; the rotation is free). */
static inline uint32_t sxtb16_ror8(uint32_t v)
{
	uint32_t r;

	__asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
	return r;
}

/* SMLAD: acc + lo(a) * lo(b) + hi(a) * hi(b), 16 x 16 bit halves. */
static inline int32_t smlad(uint32_t a, uint32_t b, int32_t acc)
{
	return __smlad((int32_t)a, (int32_t)b, acc);
}

struct cats_word2 {
	uint32_t w[2];
};

/* Two widened words in one LDRD with post-increment (GCC does not pair the loads itself). */
static inline const uint32_t *load2(const uint32_t *p, uint32_t *lo, uint32_t *hi)
{
	__asm__("ldrd %0, %1, [%2], #8"
		: "=r"(*lo), "=r"(*hi), "+r"(p)
		: "m"(*(const struct cats_word2 *)p));
	return p;
}

/* The hand-scheduled Thumb-2 routines below (GCC/Clang extended syntax). */
#if defined(__thumb2__) && defined(__GNUC__)
#define CATS_MM_ASM 1
#endif
#else
/* C stand-ins with the instructions' exact semantics, so the DSP path is testable on any
 * host (CATS_DSP_EMULATE). SMLAD wraps in 32 bits; the sums here never come near that. */
static inline uint32_t sxtb16(uint32_t v)
{
	uint32_t lo = (uint32_t)(uint16_t)(int16_t)(int8_t)(uint8_t)(v & 0xffu);
	uint32_t hi = (uint32_t)(uint16_t)(int16_t)(int8_t)(uint8_t)((v >> 16) & 0xffu);

	return lo | (hi << 16);
}

static inline uint32_t sxtb16_ror8(uint32_t v)
{
	return sxtb16((v >> 8) | (v << 24));
}

static inline int32_t smlad(uint32_t a, uint32_t b, int32_t acc)
{
	int32_t lo = (int32_t)(int16_t)(uint16_t)(a & 0xffffu) *
		     (int32_t)(int16_t)(uint16_t)(b & 0xffffu);
	int32_t hi = (int32_t)(int16_t)(uint16_t)(a >> 16) * (int32_t)(int16_t)(uint16_t)(b >> 16);

	return acc + lo + hi;
}

static inline const uint32_t *load2(const uint32_t *p, uint32_t *lo, uint32_t *hi)
{
	*lo = p[0];
	*hi = p[1];
	return p + 2;
}
#endif

#ifndef CATS_MM_ASM
#define CATS_MM_ASM 0
#endif

/* Unaligned-safe 32-bit load of four int8 values: rows are `in` bytes long, which need not be
 * a multiple of 4. On the M4 this is a single LDR (unaligned access allowed). */
static inline uint32_t load4(const int8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/*
 * How the DSP path works (cats_matmul_s8_dsp below).
 *
 * Widened pairs: two int8 rows a, b of `in` values (two tokens of x, or two output rows of w),
 * zero-padded to K = CATS_MATMUL_K(in) inputs (a multiple of 4), are stored as 16-bit values
 * for SMLAD, per "quad" of inputs c..c+3 four words
 *     a(c, c+2)  a(c+1, c+3)  b(c, c+2)  b(c+1, c+3)      (low halfword first)
 * i.e. SXTB16 and SXTB16 ROR #8 of each row's word. x and w use the same order, so SMLAD of an
 * x word with a w word adds two products of the dot product; the zero padding adds 0.
 *
 * The weights of a block of up to CATS_MATMUL_OUT_BLOCK outputs are widened once, then every
 * token pair is widened once and multiplied with all output pairs of the block by a 2 tokens x
 * 2 outputs micro-kernel (mm_tiles) that needs no widening in its loop: per quad one LDM of the
 * token pair's 4 words, one LDM of the output pair's 4 words and 8 SMLAD, 10 instructions for
 * 16 MACs. Requantisation uses one SMLAL and one ASR per output (struct cats_rq).
 */

/*
 * Requantisation of one output column, prepared once per call: P0 = bias * m + 2^(sh-1)
 * (mod 2^64), so y = sat8((P0 + dot * m) >> sh) is qref's sat8(requant(dot + bias, m, sh)):
 * the same integer, added in another order (qref's sum never leaves int64, and wrap-around
 * arithmetic would agree anyway). On the M4, P0 + dot * m is one SMLAL.
 * For sh > 32 (the exporter's usual 35..45) floor(P / 2^sh) = floor(hi / 2^(sh-32)) with hi
 * the high word of P (the low word is below one unit of 2^32 and the rounding term is already
 * in P), so one ASR of the high word replaces the 64-bit shift: k = sh - 32. sh <= 32 takes
 * the 64-bit shift (k = -sh).
 */
struct cats_rq {
	uint32_t lo, hi;
	int32_t m, k;
};

static inline void rq_init(struct cats_rq *p, int32_t bias, int32_t m, int32_t sh)
{
	const uint64_t p0 = (uint64_t)((int64_t)bias * m) + ((uint64_t)1 << (sh - 1));

	p->lo = (uint32_t)p0;
	p->hi = (uint32_t)(p0 >> 32);
	p->m = m;
	p->k = sh > 32 ? sh - 32 : -sh;
}

static inline int8_t rq_apply(int32_t dot, const struct cats_rq *p)
{
	const uint64_t v = ((uint64_t)p->hi << 32 | p->lo) + (uint64_t)((int64_t)dot * p->m);

	if (p->k > 0) {
		const int32_t r = (int32_t)(uint32_t)(v >> 32) >> p->k;

		return (int8_t)(r > CATS_QMAX ? CATS_QMAX : (r < -CATS_QMAX ? -CATS_QMAX : r));
	}
	return cats_sat8(cats_asr64((int64_t)v, (unsigned)-p->k));
}

#if CATS_MM_ASM
/*
 * Thumb-2 assembly (naked functions: AAPCS arguments in r0-r3 and on the stack, every register
 * saved by hand). The parameters are only read by the assembly.
 */
#define CATS_ASM_ARG __attribute__((unused))

/* widen16: n >= 1 blocks of 16 inputs of rows a and b into dst, widened-pair order. Per two
 * quads: the four words (two of each row) are loaded straight into the registers of their
 * even halves, SXTB16 ROR #8 fills the odd halves, SXTB16 widens in place, one STM stores the
 * eight words: 4 LDR (any alignment) + 8 SXTB16 + 1 STM. widen16_al: both rows word-aligned,
 * two LDRD instead of the four LDR (LDRD faults on unaligned addresses). */
#define CATS_WIDEN_SXT8                                                                     \
	"sxtb16 r5, r4, ror #8\n\t"                                                         \
	"sxtb16 r4, r4\n\t"                                                                 \
	"sxtb16 r7, r6, ror #8\n\t"                                                         \
	"sxtb16 r6, r6\n\t"                                                                 \
	"sxtb16 r9, r8, ror #8\n\t"                                                         \
	"sxtb16 r8, r8\n\t"                                                                 \
	"sxtb16 r11, r10, ror #8\n\t"                                                       \
	"sxtb16 r10, r10\n\t"                                                               \
	"stmia r2!, {r4-r11}\n\t"
#define CATS_WIDEN_LDR                                                                      \
	"ldr r4, [r0], #4\n\t"                                                              \
	"ldr r8, [r0], #4\n\t"                                                              \
	"ldr r6, [r1], #4\n\t"                                                              \
	"ldr r10, [r1], #4\n\t" CATS_WIDEN_SXT8
#define CATS_WIDEN_LDRD                                                                     \
	"ldrd r4, r8, [r0], #8\n\t"                                                         \
	"ldrd r6, r10, [r1], #8\n\t" CATS_WIDEN_SXT8

__attribute__((naked, noinline)) static void widen16(CATS_ASM_ARG const int8_t *a,
						     CATS_ASM_ARG const int8_t *b,
						     CATS_ASM_ARG uint32_t *dst,
						     CATS_ASM_ARG int n)
{
	__asm__ volatile("push {r4-r11}\n\t"
			 "1:\n\t" CATS_WIDEN_LDR CATS_WIDEN_LDR
			 "subs r3, r3, #1\n\t"
			 "bne 1b\n\t"
			 "pop {r4-r11}\n\t"
			 "bx lr\n\t");
}

__attribute__((naked, noinline)) static void widen16_al(CATS_ASM_ARG const int8_t *a,
							CATS_ASM_ARG const int8_t *b,
							CATS_ASM_ARG uint32_t *dst,
							CATS_ASM_ARG int n)
{
	__asm__ volatile("push {r4-r11}\n\t"
			 "1:\n\t" CATS_WIDEN_LDRD CATS_WIDEN_LDRD
			 "subs r3, r3, #1\n\t"
			 "bne 1b\n\t"
			 "pop {r4-r11}\n\t"
			 "bx lr\n\t");
}
#undef CATS_WIDEN_LDRD
#undef CATS_WIDEN_LDR
#undef CATS_WIDEN_SXT8

/*
 * mm_tiles: the 2 x 2 micro-kernel over np output pairs. xs: one widened token pair (a, b) of
 * xbytes = 16 kq bytes (kq >= 1 quads); ws: np widened output pairs (u, v), xbytes each, back
 * to back. For every output pair p: dots[4p..4p+3] = a.u, b.u, a.v, b.v (so dots[2j],
 * dots[2j+1] are output j of tokens a and b).
 *
 * Registers: r0 x pointer, r1 w pointer, r2-r5 the x words (a02 a13 b02 b13), r6-r9 the w
 * words (u02 u13 v02 v13), r10 a.u, r11 b.u, r12 a.v, lr b.v. Per quad 2 LDM + 8 SMLAD; the
 * loop runs 8 quads per turn and is entered part way (computed once per call: 40 bytes per
 * quad, every instruction forced to its 32-bit encoding) so that any kq works; no register is
 * left for the end pointer, so it is reloaded from the stack into a dead x register (3
 * instructions per 8 quads = 128 MACs).
 */
#define CATS_MM_QUAD                                                                        \
	"ldm.w r0!, {r2-r5}\n\t"                                                            \
	"ldm.w r1!, {r6-r9}\n\t"                                                            \
	"smlad r10, r2, r6, r10\n\t"                                                        \
	"smlad r10, r3, r7, r10\n\t"                                                        \
	"smlad r11, r4, r6, r11\n\t"                                                        \
	"smlad r11, r5, r7, r11\n\t"                                                        \
	"smlad r12, r2, r8, r12\n\t"                                                        \
	"smlad r12, r3, r9, r12\n\t"                                                        \
	"smlad lr, r4, r8, lr\n\t"                                                          \
	"smlad lr, r5, r9, lr\n\t"

__attribute__((naked, noinline)) static void mm_tiles(CATS_ASM_ARG const uint32_t *xs,
						      CATS_ASM_ARG const uint32_t *ws,
						      CATS_ASM_ARG uint32_t xbytes,
						      CATS_ASM_ARG int32_t *dots,
						      CATS_ASM_ARG int np)
{
	/* Frame after the second push: [sp] xs, [sp+4] dots, [sp+8] pairs left, [sp+12] xs end,
	 * [sp+16] loop entry (Thumb address). */
	__asm__ volatile("push {r4-r11, lr}\n\t"
			 "ldr r4, [sp, #36]\n\t"           /* np */
			 "add r5, r0, r2\n\t"              /* xs end */
			 "lsr r6, r2, #4\n\t"              /* kq */
			 "rsb r6, r6, #0\n\t"
			 "and r6, r6, #7\n\t"              /* quads to skip: (8 - kq % 8) % 8 */
			 "mov r7, #40\n\t"                 /* bytes per quad */
			 "adr.w r8, 2f\n\t"
			 "mla r6, r6, r7, r8\n\t"
			 "orr r6, r6, #1\n\t"
			 "push {r0, r3, r4, r5, r6}\n\t"
			 "1:\n\t"
			 "mov r10, #0\n\t"
			 "mov r11, #0\n\t"
			 "mov r12, #0\n\t"
			 "mov lr, #0\n\t"
			 "ldr r2, [sp, #16]\n\t"
			 "bx r2\n\t"
			 ".p2align 2\n\t"
			 "2:\n\t" CATS_MM_QUAD CATS_MM_QUAD CATS_MM_QUAD CATS_MM_QUAD CATS_MM_QUAD
				 CATS_MM_QUAD CATS_MM_QUAD CATS_MM_QUAD
			 "ldr r2, [sp, #12]\n\t"
			 "cmp r0, r2\n\t"
			 "bne 2b\n\t"
			 "ldr r2, [sp, #4]\n\t"
			 "stmia r2!, {r10, r11, r12, lr}\n\t"
			 "str r2, [sp, #4]\n\t"
			 "ldr r0, [sp]\n\t"
			 "ldr r2, [sp, #8]\n\t"
			 "subs r2, r2, #1\n\t"
			 "str r2, [sp, #8]\n\t"
			 "bne 1b\n\t"
			 "add sp, sp, #20\n\t"
			 "pop {r4-r11, pc}\n\t");
}
#undef CATS_MM_QUAD

/*
 * rq_rows2: requantise oc >= 1 outputs of a token pair, all with k > 0: ya[j], yb[j] from
 * dots[2j], dots[2j+1] and p[j]. Per value one LDRD of P0, SMLAL, ASR, SSAT #8 and
 * QSUB8 + QADD8 of 1 (maps -128 to -127 and nothing else: the low byte is stored), STRB.
 */
__attribute__((naked, noinline)) static void rq_rows2(CATS_ASM_ARG const int32_t *d,
						      CATS_ASM_ARG const struct cats_rq *p,
						      CATS_ASM_ARG int8_t *ya,
						      CATS_ASM_ARG int8_t *yb,
						      CATS_ASM_ARG int oc)
{
	__asm__ volatile("push {r4-r10, lr}\n\t"
			 "ldr r4, [sp, #32]\n\t" /* oc */
			 "add r4, r2, r4\n\t"    /* ya end */
			 "mov lr, #1\n\t"
			 "1:\n\t"
			 "ldrd r5, r6, [r1, #8]\n\t" /* m, k */
			 "ldrd r7, r8, [r0], #8\n\t" /* dot a, dot b */
			 "ldrd r9, r10, [r1], #16\n\t"
			 "smlal r9, r10, r7, r5\n\t"
			 "asr r10, r10, r6\n\t"
			 "ssat r10, #8, r10\n\t"
			 "qsub8 r10, r10, lr\n\t"
			 "qadd8 r10, r10, lr\n\t"
			 "strb r10, [r2], #1\n\t"
			 "ldrd r9, r10, [r1, #-16]\n\t"
			 "smlal r9, r10, r8, r5\n\t"
			 "asr r10, r10, r6\n\t"
			 "ssat r10, #8, r10\n\t"
			 "qsub8 r10, r10, lr\n\t"
			 "qadd8 r10, r10, lr\n\t"
			 "strb r10, [r3], #1\n\t"
			 "cmp r2, r4\n\t"
			 "bne 1b\n\t"
			 "pop {r4-r10, pc}\n\t");
}
#undef CATS_ASM_ARG
#else
static void mm_tiles(const uint32_t *xs, const uint32_t *ws, uint32_t xbytes, int32_t *dots,
		     int np)
{
	const uint32_t *const end = xs + xbytes / 4u;

	for (int p = 0; p < np; p++, dots += 4) {
		int32_t au = 0, av = 0, bu = 0, bv = 0;

		for (const uint32_t *px = xs; px < end; px += 4, ws += 4) {
			au = smlad(px[0], ws[0], au);
			au = smlad(px[1], ws[1], au);
			bu = smlad(px[2], ws[0], bu);
			bu = smlad(px[3], ws[1], bu);
			av = smlad(px[0], ws[2], av);
			av = smlad(px[1], ws[3], av);
			bv = smlad(px[2], ws[2], bv);
			bv = smlad(px[3], ws[3], bv);
		}
		dots[0] = au;
		dots[1] = bu;
		dots[2] = av;
		dots[3] = bv;
	}
}
#endif /* CATS_MM_ASM */

/* Rows a and b (b == NULL: a zero row, for an odd row or output count) into dst as a widened
 * pair of CATS_MATMUL_K(in) / 4 quads. */
static void widen_pair(const int8_t *a, const int8_t *b, int in, uint32_t *dst)
{
	static const int8_t zero[4];
	const int in4 = in & ~3;
	int c = 0;

#if CATS_MM_ASM
	if (b != NULL && in >= 16) {
		const int n = in >> 4;

		if ((((uintptr_t)a | (uintptr_t)b) & 3u) == 0) {
			widen16_al(a, b, dst, n);
		} else {
			widen16(a, b, dst, n);
		}
		c = 16 * n;
		dst += 16 * n;
	}
#endif
	for (; c < in4; c += 4, dst += 4) {
		const uint32_t u = load4(a + c), v = load4(b != NULL ? b + c : zero);

		dst[0] = sxtb16(u);
		dst[1] = sxtb16_ror8(u);
		dst[2] = sxtb16(v);
		dst[3] = sxtb16_ror8(v);
	}
	if (c < in) { /* the last in % 4 values, zero-padded to a quad */
		uint32_t u = 0, v = 0;

		for (int i = 0; c + i < in; i++) {
			u |= (uint32_t)(uint8_t)a[c + i] << (8 * i);
			v |= b != NULL ? (uint32_t)(uint8_t)b[c + i] << (8 * i) : 0u;
		}
		dst[0] = sxtb16(u);
		dst[1] = sxtb16_ror8(u);
		dst[2] = sxtb16(v);
		dst[3] = sxtb16_ror8(v);
	}
}

/* The oc outputs of one token pair (rows ya, yb; yb NULL for a lone last row) from mm_tiles'
 * dots. fast: every k > 0 (the assembly handles only that case). */
static void rq_tile(const int32_t *d, const struct cats_rq *p, int oc, int8_t *ya, int8_t *yb,
		    int fast)
{
#if CATS_MM_ASM
	if (yb != NULL && fast) {
		rq_rows2(d, p, ya, yb, oc);
		return;
	}
#else
	(void)fast;
#endif
	for (int j = 0; j < oc; j++, d += 2, p++) {
		ya[j] = rq_apply(d[0], p);
		if (yb != NULL) {
			yb[j] = rq_apply(d[1], p);
		}
	}
}

/*
 * One token (rows == 1: the output head, the per-token embedding): widening the weights
 * would cost more than the dot products, so the weights are widened in the loop (2 outputs
 * per turn: 2 LDR, 4 SXTB16, 1 LDRD of the widened token, 4 SMLAD per 8 MACs) and only the
 * token is widened first (xs[2q], xs[2q+1] per quad).
 */
static void matmul_row(const int8_t *x, int in, const int8_t *w, int out, const int32_t *bias,
		       const int32_t *m, const int32_t *sh, int8_t *y, uint32_t *xs)
{
	const int in4 = in & ~3;
	int o = 0;

	for (int c = 0, i = 0; c < in4; c += 4, i += 2) {
		const uint32_t u = load4(x + c);

		xs[i] = sxtb16(u);
		xs[i + 1] = sxtb16_ror8(u);
	}
	for (; o + 1 < out; o += 2) {
		const int8_t *w0 = w + (size_t)o * in;
		const int8_t *w1 = w0 + in;
		const int8_t *const end = w0 + in4;
		const uint32_t *px = xs;
		int32_t a0 = 0, a1 = 0;

		while (w0 < end) {
			const uint32_t u = load4(w0), v = load4(w1);
			uint32_t x02, x13;

			px = load2(px, &x02, &x13);
			a0 = smlad(sxtb16(u), x02, a0);
			a0 = smlad(sxtb16_ror8(u), x13, a0);
			a1 = smlad(sxtb16(v), x02, a1);
			a1 = smlad(sxtb16_ror8(v), x13, a1);
			w0 += 4;
			w1 += 4;
		}
		for (int c = in4; c < in; c++, w0++, w1++) {
			a0 += (int32_t)x[c] * *w0;
			a1 += (int32_t)x[c] * *w1;
		}
		y[o] = finish(a0, bias[o], m[o], sh[o]);
		y[o + 1] = finish(a1, bias[o + 1], m[o + 1], sh[o + 1]);
	}
	if (o < out) {
		const int8_t *w0 = w + (size_t)o * in;
		const uint32_t *px = xs;
		int32_t a0 = 0;
		int c = 0;

		for (; c < in4; c += 4) {
			const uint32_t u = load4(w0 + c);
			uint32_t x02, x13;

			px = load2(px, &x02, &x13);
			a0 = smlad(sxtb16(u), x02, a0);
			a0 = smlad(sxtb16_ror8(u), x13, a0);
		}
		for (; c < in; c++) {
			a0 += (int32_t)x[c] * w0[c];
		}
		y[o] = finish(a0, bias[o], m[o], sh[o]);
	}
}

/*
 * Blocks of up to CATS_MATMUL_OUT_BLOCK outputs: the block's weight rows are widened once and
 * its requantisation constants prepared; then each token pair is widened once and mm_tiles
 * runs the 2 x 2 micro-kernel over all output pairs of the block. With out <=
 * CATS_MATMUL_OUT_BLOCK (every node at D >= 8) each token and each weight row is widened once
 * per call. An odd last row / output is paired with a zero row (its results are not stored).
 * All sums are exact, so the result equals cats_matmul_s8_c() bit for bit.
 */
void cats_matmul_s8_dsp(const int8_t *x, int rows, int in, const int8_t *w, int out,
			const int32_t *bias, const int32_t *m, const int32_t *sh, int8_t *y,
			void *scratch)
{
	const int kq = (int)(CATS_MATMUL_K(in) / 4u); /* quads per widened row */
	const int ob = (int)CATS_MATMUL_OB(out);
	uint32_t *const xs = (uint32_t *)scratch; /* one token pair: 4 kq words */
	uint32_t *const ws = xs + 4 * kq;          /* ob / 2 output pairs, 4 kq words each */
	struct cats_rq *const rq = (struct cats_rq *)(ws + (size_t)2 * kq * ob); /* ob */
	int32_t *const dots = (int32_t *)(rq + ob); /* 2 ob: per output, tokens a and b */

	if (rows <= 0 || out <= 0) {
		return;
	}
	if (in <= 0) {
		cats_matmul_s8_c(x, rows, in, w, out, bias, m, sh, y);
		return;
	}
	if (rows == 1) {
		matmul_row(x, in, w, out, bias, m, sh, y, xs);
		return;
	}
	for (int o0 = 0; o0 < out; o0 += ob) {
		const int oc = out - o0 < ob ? out - o0 : ob;
		const int np = (oc + 1) / 2;
		int fast = 1;

		for (int p = 0; p < np; p++) {
			const int8_t *w0 = w + (size_t)(o0 + 2 * p) * in;

			widen_pair(w0, 2 * p + 1 < oc ? w0 + in : NULL, in, ws + (size_t)4 * kq * p);
		}
		for (int j = 0; j < oc; j++) {
			rq_init(&rq[j], bias[o0 + j], m[o0 + j], sh[o0 + j]);
			fast &= rq[j].k > 0;
		}
		for (int r = 0; r < rows; r += 2) {
			const int8_t *xa = x + (size_t)r * in;
			int8_t *ya = y + (size_t)r * out + o0;
			const int two = r + 1 < rows;

			widen_pair(xa, two ? xa + in : NULL, in, xs);
			mm_tiles(xs, ws, (uint32_t)(16 * kq), dots, np);
			rq_tile(dots, rq, oc, ya, two ? ya + out : NULL, fast);
		}
	}
}
#endif /* CATS_HAVE_DSP_PATH */

size_t cats_matmul_s8_scratch_bytes(int in, int out)
{
	return in < 0 || out < 0 ? 0 : CATS_MATMUL_SCRATCH_BYTES(in, out);
}

void cats_matmul_s8(const int8_t *x, int rows, int in, const int8_t *w, int out,
		    const int32_t *bias, const int32_t *m, const int32_t *sh, int8_t *y,
		    void *scratch)
{
#if CATS_HAVE_DSP_PATH
	cats_matmul_s8_dsp(x, rows, in, w, out, bias, m, sh, y, scratch);
#else
	(void)scratch;
	cats_matmul_s8_c(x, rows, in, w, out, bias, m, sh, y);
#endif
}

/*
 * One LayerNorm row in 32-bit operands, equal to the 64-bit loop below for every input it
 * takes: with n <= 128 present columns, |n x - s| = n |x - mean| <= 255 n < 2^15; with
 * root > 1, inv = floor(2^31 / root) <= 2^30, so (n x - s) * inv is one 32 x 32 -> 64-bit
 * multiply (SMULL on the M4) and d = that >> 15 has |d| < 2^30; the requantisation d * m is
 * again 32 x 32 -> 64. The 64 x 64 products of the general loop cost the M4 a library call each.
 */
#define CATS_LN_NARROW_MAX 128

/* cats_requant(d, m, sh) for |d| < 2^30, |m| < 2^31 and 33 <= sh <= 62: the rounding term
 * 2^(sh-1) has a zero low word, so it adds to the high word of d * m (SMMUL on the M4), and
 * the high word shifted by sh - 32 is the result. The general form costs a 64 x 64 multiply
 * and a variable 64-bit shift per element. */
static inline int32_t requant_hi(int32_t d, int32_t m, int32_t sh)
{
	const int32_t hi = (int32_t)(((int64_t)d * m) >> 32);

	return (hi + ((int32_t)1 << (sh - 33))) >> (sh - 32);
}

static void ln_row_narrow(const int8_t *xr, int cols, const uint8_t *present, int32_t n,
			  int32_t s, int32_t inv, const int32_t *m, const int32_t *sh,
			  const int32_t *beta, int8_t *yr)
{
	for (int c = 0; c < cols; c++) {
		if (present != NULL && present[c] == 0) {
			yr[c] = 0;
			continue;
		}
		const int32_t e = n * xr[c] - s;
		const int32_t d = (int32_t)cats_asr64((int64_t)e * inv,
						      CATS_LN_INV_BITS - CATS_LN_NORM_BITS);
		const int64_t q = sh[c] >= 33 && sh[c] <= 62
					  ? (int64_t)requant_hi(d, m[c], sh[c])
					  : cats_requant((int64_t)d, m[c], sh[c]);

		yr[c] = cats_sat8(q + beta[c]);
	}
}

void cats_layer_norm_s8(const int8_t *x, int rows, int cols, const uint8_t *present,
			const int32_t *m, const int32_t *sh, const int32_t *beta, int32_t eps_q8,
			int8_t *y)
{
	int64_t n = 0;

	for (int c = 0; c < cols; c++) {
		n += present == NULL || present[c] != 0;
	}
	/* eps * n^2 / 256 keeps eps in the units of V = n^2 var. */
	const int64_t eps = cats_asr64((int64_t)eps_q8 * n * n, 8);

	for (int r = 0; r < rows; r++) {
		const int8_t *xr = x + (size_t)r * cols;
		int8_t *yr = y + (size_t)r * cols;
		int64_t s = 0, q = 0;

		for (int c = 0; c < cols; c++) {
			if (present == NULL || present[c] != 0) {
				s += xr[c];
				q += (int32_t)xr[c] * xr[c];
			}
		}
		/* V = n sum x^2 - (sum x)^2 = n^2 var >= 0, so the root is of a non-negative value. */
		const int64_t v = n * q - s * s + eps;
		int64_t root = (int64_t)cats_isqrt64((uint64_t)v);
		const int64_t inv = ((int64_t)1 << CATS_LN_INV_BITS) / (root < 1 ? 1 : root);

		/* Stats first, then outputs: y may alias x. */
		if (n <= CATS_LN_NARROW_MAX && root > 1) {
			ln_row_narrow(xr, cols, present, (int32_t)n, (int32_t)s, (int32_t)inv, m, sh,
				      beta, yr);
			continue;
		}
		for (int c = 0; c < cols; c++) {
			if (present != NULL && present[c] == 0) {
				yr[c] = 0;
				continue;
			}
			int64_t d = cats_asr64((n * xr[c] - s) * inv,
					       CATS_LN_INV_BITS - CATS_LN_NORM_BITS);

			yr[c] = cats_sat8(cats_requant(d, m[c], sh[c]) + beta[c]);
		}
	}
}

void cats_softmax_s8(const int64_t *logits, const uint8_t *valid, int n, int8_t *p)
{
	int64_t mx = 0, sum = 0;
	int any = 0;

	for (int j = 0; j < n; j++) {
		if ((valid == NULL || valid[j] != 0) && (!any || logits[j] > mx)) {
			mx = logits[j];
			any = 1;
		}
	}
	for (int j = 0; j < n; j++) {
		if (valid == NULL || valid[j] != 0) {
			int64_t diff = mx - logits[j];

			sum += cats_exp_lut[diff > CATS_SOFTMAX_DIFF_MAX ? CATS_SOFTMAX_DIFF_MAX : diff];
		}
	}
	/* sum >= 2^15 whenever any entry is valid (the maximum contributes exp(0)). */
	const int64_t recip = sum > 0 ? ((int64_t)1 << 31) / sum : 0;

	for (int j = 0; j < n; j++) {
		int64_t e = 0, q;

		if (valid == NULL || valid[j] != 0) {
			int64_t diff = mx - logits[j];

			e = cats_exp_lut[diff > CATS_SOFTMAX_DIFF_MAX ? CATS_SOFTMAX_DIFF_MAX : diff];
		}
		q = (e * recip + ((int64_t)1 << 23)) >> 24; /* non-negative: plain shift is exact */
		p[j] = (int8_t)(q > CATS_QMAX ? CATS_QMAX : q);
	}
}

void cats_attention_s8(int8_t *q, const int8_t *k, const int8_t *v, int n, int width,
		       int head_dim, int causal, int32_t ml, int32_t shl, int32_t ma, int32_t sha,
		       int64_t *logits, int8_t *p)
{
	for (int h0 = 0; h0 < width; h0 += head_dim) {
		for (int i = 0; i < n; i++) {
			int8_t *qi = q + (size_t)i * width + h0;
			/* Causal: row i sees tokens 0..i; a valid prefix gives the same max, sum and
			 * probabilities as qref's masked row, and the masked entries add 0. */
			const int len = causal ? i + 1 : n;

			for (int j = 0; j < len; j++) {
				const int8_t *kj = k + (size_t)j * width + h0;
				int32_t dot = 0;

				for (int d = 0; d < head_dim; d++) {
					dot += (int32_t)qi[d] * kj[d];
				}
				logits[j] = cats_requant(dot, ml, shl);
			}
			cats_softmax_s8(logits, NULL, len, p);
			/* q row i of this head is consumed: the head output overwrites it. */
			for (int d = 0; d < head_dim; d++) {
				int32_t acc = 0;

				for (int j = 0; j < len; j++) {
					acc += (int32_t)p[j] * v[(size_t)j * width + h0 + d];
				}
				qi[d] = cats_sat8(cats_requant(acc, ma, sha));
			}
		}
	}
}

void cats_add_s8(const int8_t *x, int32_t mx, const int8_t *o, int32_t mo, int32_t sh, int n,
		 int8_t *y)
{
	const int64_t half = (int64_t)1 << (sh - 1);

	for (int i = 0; i < n; i++) {
		int64_t acc = (int64_t)x[i] * mx + (int64_t)o[i] * mo + half;

		y[i] = cats_sat8(cats_asr64(acc, (unsigned)sh));
	}
}

void cats_lut_s8(const int8_t *lut, const int8_t *x, int n, int8_t *y)
{
	for (int i = 0; i < n; i++) {
		y[i] = lut[(int)x[i] + 128];
	}
}

void cats_pool_s8(const int8_t *x, int rows, int cols, int32_t m, int32_t sh, int8_t *y)
{
	for (int c = 0; c < cols; c++) {
		int32_t acc = 0;

		for (int r = 0; r < rows; r++) {
			acc += x[(size_t)r * cols + c];
		}
		y[c] = cats_sat8(cats_requant(acc, m, sh));
	}
}
