/*
 * Host timing loop around cats_matmul_s8 for bench/kernels/run.py (built into one shared
 * object with src/core/kernels.c and called through ctypes; the loop runs in C so the ctypes
 * call overhead is paid once per measurement, not per matmul).
 */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <time.h>

#include "cats/cats_kernels.h"

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Best (smallest) nanoseconds per call over `rounds` rounds of `reps` calls each. */
double cats_bench_matmul(int rounds, int reps, const int8_t *x, int rows, int in,
			 const int8_t *w, int out, const int32_t *bias, const int32_t *m,
			 const int32_t *sh, int8_t *y, void *scratch)
{
	double best = 1e300;

	for (int r = 0; r < rounds; r++) {
		double t0 = now_ns();

		for (int i = 0; i < reps; i++) {
			cats_matmul_s8(x, rows, in, w, out, bias, m, sh, y, scratch);
		}
		double dt = (now_ns() - t0) / reps;

		if (dt < best) {
			best = dt;
		}
	}
	return best;
}

int cats_bench_have_dsp_path(void)
{
	return CATS_HAVE_DSP_PATH;
}
