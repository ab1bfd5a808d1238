/*
 * ztest suite: the CATS integer kernels against fixed vectors computed by the Python
 * reference (tools/cats/quant/qref.py, through gen_vectors.py -> vectors.h). On a Cortex-M4 board
 * cats_matmul_s8() takes the SXTB16/SMLAD path; both paths are checked where both exist.
 *
 *   west build -b native_sim cats_zephyr_module/tests/kernels -t run
 *   west twister -T cats_zephyr_module/tests/kernels
 */
#include <string.h>

#include <zephyr/ztest.h>

#include "cats/cats_kernels.h"
#include "vectors.h"

static int8_t y[64];
static uint64_t scratch[(CATS_MATMUL_SCRATCH_BYTES(LIN_IN, LIN_OUT) + 7) / 8];

ZTEST(cats_kernels, test_matmul_matches_qref)
{
	memset(y, 0, sizeof(y));
	cats_matmul_s8(lin_x, LIN_ROWS, LIN_IN, lin_w, LIN_OUT, lin_bias, lin_m, lin_sh, y,
		       scratch);
	zassert_mem_equal(y, lin_y, sizeof(lin_y), "cats_matmul_s8 differs from qref.linear");
}

ZTEST(cats_kernels, test_matmul_paths_agree)
{
	memset(y, 0, sizeof(y));
	cats_matmul_s8_c(lin_x, LIN_ROWS, LIN_IN, lin_w, LIN_OUT, lin_bias, lin_m, lin_sh, y);
	zassert_mem_equal(y, lin_y, sizeof(lin_y), "plain C path differs from qref.linear");
#if CATS_HAVE_DSP_PATH
	memset(y, 0, sizeof(y));
	cats_matmul_s8_dsp(lin_x, LIN_ROWS, LIN_IN, lin_w, LIN_OUT, lin_bias, lin_m, lin_sh, y,
			   scratch);
	zassert_mem_equal(y, lin_y, sizeof(lin_y), "DSP path differs from qref.linear");
#else
	ztest_test_skip();
#endif
}

ZTEST(cats_kernels, test_partial_layer_norm)
{
	memset(y, 0x55, sizeof(y));
	cats_layer_norm_s8(ln_x, LN_ROWS, LN_COLS, ln_present, ln_m, ln_sh, ln_beta, LN_EPS_Q8,
			   y);
	zassert_mem_equal(y, ln_y, sizeof(ln_y), "cats_layer_norm_s8 differs from qref");
	for (int r = 0; r < LN_ROWS; r++) {
		for (int c = 0; c < LN_COLS; c++) {
			if (!ln_present[c]) {
				zassert_equal(y[r * LN_COLS + c], 0, "absent column not zero");
			}
		}
	}
}

ZTEST(cats_kernels, test_softmax_masked)
{
	int8_t p[SM_N];

	cats_softmax_s8(sm_logits, sm_valid, SM_N, p);
	zassert_mem_equal(p, sm_p, sizeof(sm_p), "cats_softmax_s8 differs from qref.softmax");
}

ZTEST(cats_kernels, test_residual_add)
{
	int8_t out[ADD_N];

	cats_add_s8(add_a, ADD_MX, add_b, ADD_MO, ADD_SH, ADD_N, out);
	zassert_mem_equal(out, add_y, sizeof(add_y), "cats_add_s8 differs from qref.add");
}

ZTEST(cats_kernels, test_isqrt_exact)
{
	for (int i = 0; i < ISQRT_N; i++) {
		zassert_equal(cats_isqrt64(isqrt_v[i]), isqrt_r[i], "isqrt(%u) wrong", i);
	}
}

ZTEST(cats_kernels, test_requant_rounding_and_saturation)
{
	/* (acc * m + 2^(sh-1)) >> sh rounds half up, also for negative values. */
	zassert_equal(cats_requant(3, 1 << 30, 31), 2, "1.5 rounds up to 2");
	zassert_equal(cats_requant(-3, 1 << 30, 31), -1, "-1.5 rounds up to -1");
	zassert_equal(cats_requant(-5, 1 << 30, 31), -2, "-2.5 rounds up to -2");
	zassert_equal(cats_sat8(1000), 127, "saturates high at 127");
	zassert_equal(cats_sat8(-1000), -127, "saturates low at -127 (symmetric)");
	zassert_equal(cats_asr64(-1, 1), -1, "arithmetic shift floors");
}

ZTEST_SUITE(cats_kernels, NULL, NULL, NULL, NULL, NULL);
