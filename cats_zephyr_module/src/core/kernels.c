/*
 * Integer kernels, bit-exact with tools/cats/qref.py (see cats_kernels.h).
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

/* Unaligned-safe 32-bit load of four int8 values: weight rows are `in` bytes long, which
 * need not be a multiple of 4. On the M4 this is a single LDR (unaligned access allowed). */
static inline uint32_t load4(const int8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/*
 * 2 output rows x 2 tokens x 4 inputs per inner iteration. The two token rows are widened
 * once into `scratch` (16-bit pairs in SXTB16 order: inputs 0,2 then 1,3 of every 4, token A
 * then token B), so the inner loop loads each weight word once, widens it with two SXTB16
 * and feeds four SMLADs with it. Per 16 MACs: 2 LDR (weights), 2 LDRD (activations),
 * 4 SXTB16, 8 SMLAD and the loop's compare + branch: 18 instructions, 1.125 per MAC (GCC -O2,
 * Cortex-M4). The widening is amortised over all outputs. Odd outputs, an odd last token and
 * the last in % 4 inputs take plain C; all sums are exact, so the result equals
 * cats_matmul_s8_c() bit for bit.
 */
void cats_matmul_s8_dsp(const int8_t *x, int rows, int in, const int8_t *w, int out,
			const int32_t *bias, const int32_t *m, const int32_t *sh, int8_t *y,
			void *scratch)
{
	const int in4 = in & ~3;
	uint32_t *xs = (uint32_t *)scratch;
	int r = 0;

	for (; r + 1 < rows; r += 2) {
		const int8_t *xa = x + (size_t)r * in;
		const int8_t *xb = xa + in;
		int8_t *ya = y + (size_t)r * out;
		int8_t *yb = ya + out;
		int o = 0;

		for (int c = 0, i = 0; c < in4; c += 4, i += 4) {
			const uint32_t a = load4(xa + c), b = load4(xb + c);

			xs[i] = sxtb16(a);
			xs[i + 1] = sxtb16_ror8(a);
			xs[i + 2] = sxtb16(b);
			xs[i + 3] = sxtb16_ror8(b);
		}
		for (; o + 1 < out; o += 2) {
			const int8_t *w0 = w + (size_t)o * in;
			const int8_t *w1 = w0 + in;
			const int8_t *const end = w0 + in4;
			const uint32_t *px = xs;
			int32_t a0 = 0, b0 = 0, a1 = 0, b1 = 0; /* token a/b x output 0/1 */

			while (w0 < end) {
				const uint32_t u = load4(w0), v = load4(w1);
				const uint32_t ue = sxtb16(u), uo = sxtb16_ror8(u);
				const uint32_t ve = sxtb16(v), vo = sxtb16_ror8(v);
				uint32_t x02, x13;

				px = load2(px, &x02, &x13); /* token a */
				a0 = smlad(ue, x02, a0);
				a0 = smlad(uo, x13, a0);
				a1 = smlad(ve, x02, a1);
				a1 = smlad(vo, x13, a1);
				px = load2(px, &x02, &x13); /* token b */
				b0 = smlad(ue, x02, b0);
				b0 = smlad(uo, x13, b0);
				b1 = smlad(ve, x02, b1);
				b1 = smlad(vo, x13, b1);
				w0 += 4;
				w1 += 4;
			}
			for (int c = in4; c < in; c++, w0++, w1++) {
				a0 += (int32_t)xa[c] * *w0;
				b0 += (int32_t)xb[c] * *w0;
				a1 += (int32_t)xa[c] * *w1;
				b1 += (int32_t)xb[c] * *w1;
			}
			ya[o] = finish(a0, bias[o], m[o], sh[o]);
			yb[o] = finish(b0, bias[o], m[o], sh[o]);
			ya[o + 1] = finish(a1, bias[o + 1], m[o + 1], sh[o + 1]);
			yb[o + 1] = finish(b1, bias[o + 1], m[o + 1], sh[o + 1]);
		}
		if (o < out) { /* last odd output: 1 output x 2 tokens */
			const int8_t *w0 = w + (size_t)o * in;
			const uint32_t *px = xs;
			int32_t a0 = 0, b0 = 0;
			int c = 0;

			for (; c < in4; c += 4) {
				const uint32_t u = load4(w0 + c);
				const uint32_t ue = sxtb16(u), uo = sxtb16_ror8(u);
				uint32_t x02, x13;

				px = load2(px, &x02, &x13);
				a0 = smlad(ue, x02, a0);
				a0 = smlad(uo, x13, a0);
				px = load2(px, &x02, &x13);
				b0 = smlad(ue, x02, b0);
				b0 = smlad(uo, x13, b0);
			}
			for (; c < in; c++) {
				a0 += (int32_t)xa[c] * w0[c];
				b0 += (int32_t)xb[c] * w0[c];
			}
			ya[o] = finish(a0, bias[o], m[o], sh[o]);
			yb[o] = finish(b0, bias[o], m[o], sh[o]);
		}
	}
	if (r < rows) { /* last odd token row */
		cats_matmul_s8_c(x + (size_t)r * in, 1, in, w, out, bias, m, sh,
				 y + (size_t)r * out);
	}
}
#endif /* CATS_HAVE_DSP_PATH */

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
