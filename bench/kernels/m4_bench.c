/*
 * Instructions per MAC of cats_matmul_s8 on a Cortex-M4F, counted under QEMU (mps2-an386).
 *
 * How instructions are counted: QEMU runs with `-icount shift=0`, which makes its virtual
 * clock advance exactly 1 ns per executed guest instruction (TCG counts instructions per
 * translated block and stops exactly at I/O accesses). The CMSDK APB timer 0 of the MPS2 board
 * (0x40000000) counts down at the 25 MHz board clock derived from that virtual clock, so one
 * timer tick is exactly 40 executed instructions. Reading the timer before and after a kernel
 * call gives its instruction count to within one tick; each shape is repeated until it has
 * executed at least CATS_BENCH_MIN_INSN instructions, so the +-40 instruction quantisation is
 * below 0.1 %. A calibration loop of a known length (SUBS + BNE, 2 instructions per turn) is
 * measured first and must come out exact, which proves the 40-instructions-per-tick scale.
 * (QEMU models no cycle timing and no DWT CYCCNT, so this counts instructions, not cycles.)
 *
 * After the measurements the image checks the DSP path against the plain C path on random
 * shapes chosen for the DSP path's edge cases (one row, odd rows and outputs, every in % 16,
 * outputs across blocks, misaligned rows, shifts <= 32 next to larger ones, extreme values),
 * with guard bytes around y and past the scratch buffer: this is the only place the Thumb-2
 * assembly runs on anything but the benchmark shapes.
 *
 * Output (semihosting), one line per measurement, parsed by bench/kernels/run.py:
 *   calib <turns> <instructions>
 *   shape <name> <rows> <in> <out> <reps> <path dsp|c> <instructions> <checksum>
 *   check <cases> ok          (or: error check ...)
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cats/cats_kernels.h"
#include "semihost.h"
#include "shapes.h"

#ifndef CATS_BENCH_MIN_INSN
#define CATS_BENCH_MIN_INSN 2000000u
#endif

#define TIMER0_CTRL (*(volatile uint32_t *)0x40000000u)
#define TIMER0_VALUE (*(volatile uint32_t *)0x40000004u)
#define TIMER0_RELOAD (*(volatile uint32_t *)0x40000008u)
#define INSN_PER_TICK 40u /* 25 MHz timer clock, 1 ns per instruction (-icount shift=0) */

static int8_t xbuf[CATS_BENCH_MAX_ROWS * CATS_BENCH_MAX_IN];
static int8_t wbuf[CATS_BENCH_MAX_OUT * CATS_BENCH_MAX_IN];
static int8_t ybuf[CATS_BENCH_MAX_ROWS * CATS_BENCH_MAX_OUT];
static int8_t yref[CATS_BENCH_MAX_ROWS * CATS_BENCH_MAX_OUT];
static int32_t bias[CATS_BENCH_MAX_OUT], mult[CATS_BENCH_MAX_OUT], shift[CATS_BENCH_MAX_OUT];
static uint64_t scratch[(CATS_MATMUL_SCRATCH_BYTES(CATS_BENCH_MAX_IN, CATS_BENCH_MAX_OUT) + 7) / 8];

/* The edge-case check: up to CHECK_MAX_IN inputs (misaligned by up to 3 bytes), guard bytes. */
#define CHECK_CASES 600
#define CHECK_MAX_ROWS 9
#define CHECK_MAX_IN 150
#define CHECK_MAX_OUT 40
#define CHECK_GUARD 32
static uint64_t cscratch[(CATS_MATMUL_SCRATCH_BYTES(CHECK_MAX_IN, CHECK_MAX_OUT) + CHECK_GUARD +
			  7) / 8];
static int8_t cy[CHECK_MAX_ROWS * CHECK_MAX_OUT + 2 * CHECK_GUARD];

static uint32_t lcg = 12345u;
static uint32_t rnd(void)
{
	lcg = lcg * 1664525u + 1013904223u;
	return lcg >> 8;
}

static void fill(void)
{
	for (size_t i = 0; i < sizeof(xbuf); i++) {
		xbuf[i] = (int8_t)((int)(rnd() % 255u) - 127);
	}
	for (size_t i = 0; i < sizeof(wbuf); i++) {
		wbuf[i] = (int8_t)((int)(rnd() % 255u) - 127);
	}
	for (int o = 0; o < CATS_BENCH_MAX_OUT; o++) {
		bias[o] = (int32_t)(rnd() % 20001u) - 10000;
		mult[o] = (int32_t)(1u << 30) + (int32_t)(rnd() % (1u << 30));
		shift[o] = 44 + (int32_t)(rnd() % 3u);
	}
}

static inline uint32_t ticks(void)
{
	return TIMER0_VALUE;
}

__attribute__((noinline)) static void spin(uint32_t turns)
{
	__asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(turns) : : "cc");
}

static uint32_t checksum(const int8_t *y, int n)
{
	uint32_t h = 2166136261u;
	for (int i = 0; i < n; i++) {
		h = (h ^ (uint8_t)y[i]) * 16777619u;
	}
	return h;
}

static char line[160];

static uint32_t run(int dsp, int rows, int in, int out, uint32_t reps)
{
	uint32_t t0 = ticks();
	for (uint32_t i = 0; i < reps; i++) {
#if CATS_HAVE_DSP_PATH
		if (dsp) {
			cats_matmul_s8_dsp(xbuf, rows, in, wbuf, out, bias, mult, shift, ybuf,
					   scratch);
			continue;
		}
#endif
		cats_matmul_s8_c(xbuf, rows, in, wbuf, out, bias, mult, shift, ybuf);
	}
	uint32_t t1 = ticks();
	return (t0 - t1) * INSN_PER_TICK; /* down-counter; newlib-nano prints no 64-bit */
}

static int bench(const char *name, int rows, int in, int out)
{
	const uint32_t macs = (uint32_t)rows * (uint32_t)in * (uint32_t)out;
	/* Repetitions: at least CATS_BENCH_MIN_INSN instructions at ~1 per MAC. */
	const uint32_t reps = (CATS_BENCH_MIN_INSN + macs - 1u) / macs;
	const int n = rows * out;
	int paths = CATS_HAVE_DSP_PATH ? 2 : 1;

	memset(yref, 0, sizeof(yref));
	cats_matmul_s8_c(xbuf, rows, in, wbuf, out, bias, mult, shift, yref);
	for (int p = 0; p < paths; p++) {
		const int dsp = (p == 1);
		uint32_t insn;

		memset(ybuf, 0, sizeof(ybuf));
		insn = run(dsp, rows, in, out, reps);
		if (memcmp(ybuf, yref, (size_t)n) != 0) {
			snprintf(line, sizeof(line), "error %s: dsp and C paths differ\n", name);
			semihost_puts(line);
			return 1;
		}
		snprintf(line, sizeof(line), "shape %s %d %d %d %lu %s %lu %08lx\n", name, rows,
			 in, out, (unsigned long)reps, dsp ? "dsp" : "c", (unsigned long)insn,
			 (unsigned long)checksum(ybuf, n));
		semihost_puts(line);
	}
	return 0;
}

static int8_t rnd8(int lo)
{
	return (int8_t)((int)(rnd() % (uint32_t)(128 - lo)) + lo);
}

/* One random edge-case shape; 0 if the DSP path equals the C path and wrote nothing outside
 * y and its scratch. */
static int check_one(int i)
{
	static const int row_set[] = {1, 2, 3, 4, 5, 7, 9};
	const int rows = row_set[rnd() % (sizeof(row_set) / sizeof(row_set[0]))];
	const int in = 1 + (int)(rnd() % CHECK_MAX_IN);
	const int out = 1 + (int)(rnd() % CHECK_MAX_OUT);
	const int lo = (i & 1) ? -128 : -127;
	int8_t *x = xbuf + (i & 3), *w = wbuf + ((i >> 2) & 3);
	int8_t *y = cy + CHECK_GUARD;
	uint8_t *guard = (uint8_t *)cscratch + CATS_MATMUL_SCRATCH_BYTES(in, out);
	const int n = rows * out;

	for (int k = 0; k < rows * in; k++) {
		x[k] = (i % 13 == 0) ? (int8_t)lo : rnd8(lo);
	}
	for (int k = 0; k < out * in; k++) {
		w[k] = (i % 13 == 0) ? (int8_t)((i & 2) ? 127 : lo) : rnd8(lo);
	}
	for (int o = 0; o < out; o++) {
		const uint32_t r = rnd();

		mult[o] = (int32_t)((1u << 30) + (r % (1u << 30)));
		mult[o] = (r & 0x80000000u) ? -mult[o] : mult[o];
		bias[o] = (int32_t)rnd() - (int32_t)(1u << 23);
		bias[o] = (int32_t)(((uint32_t)bias[o] << 8) | (rnd() & 0xffu)) >> (rnd() % 24u);
		shift[o] = (i % 5 == 0 && (rnd() & 1u)) ? 1 + (int32_t)(rnd() % 32u)
							   : 33 + (int32_t)(rnd() % 15u);
	}
	memset(yref, 0, sizeof(yref));
	cats_matmul_s8_c(x, rows, in, w, out, bias, mult, shift, yref);
	memset(cy, 0x5a, sizeof(cy));
	memset(cscratch, 0x77, sizeof(cscratch));
	memset(guard, 0xa5, CHECK_GUARD);
#if CATS_HAVE_DSP_PATH
	cats_matmul_s8_dsp(x, rows, in, w, out, bias, mult, shift, y, cscratch);
#else
	cats_matmul_s8_c(x, rows, in, w, out, bias, mult, shift, y);
#endif
	if (memcmp(y, yref, (size_t)n) != 0) {
		return 1;
	}
	for (int k = 0; k < CHECK_GUARD; k++) {
		if (guard[k] != 0xa5u || cy[k] != 0x5a || y[n + k] != 0x5a) {
			return 2;
		}
	}
	return 0;
}

static int check(void)
{
	for (int i = 0; i < CHECK_CASES; i++) {
		const int rc = check_one(i);

		if (rc != 0) {
			snprintf(line, sizeof(line), "error check case %d: %s\n", i,
				 rc == 1 ? "dsp and C paths differ" : "write outside y / scratch");
			semihost_puts(line);
			return 1;
		}
	}
	snprintf(line, sizeof(line), "check %d ok\n", CHECK_CASES);
	semihost_puts(line);
	return 0;
}

int main(void)
{
	int rc = 0;

	TIMER0_CTRL = 0;
	TIMER0_RELOAD = 0xFFFFFFFFu;
	TIMER0_VALUE = 0xFFFFFFFFu;
	TIMER0_CTRL = 1u; /* enable, internal clock, no interrupt */

	/* Calibration: 2 * turns instructions (+ a handful for the call), must read back. */
	for (uint32_t turns = 100000u; turns <= 1000000u; turns *= 10u) {
		uint32_t t0 = ticks();
		spin(turns);
		uint32_t t1 = ticks();
		snprintf(line, sizeof(line), "calib %lu %lu\n", (unsigned long)turns,
			 (unsigned long)((t0 - t1) * INSN_PER_TICK));
		semihost_puts(line);
	}
	snprintf(line, sizeof(line), "build dsp_path=%d\n", CATS_HAVE_DSP_PATH);
	semihost_puts(line);

	fill();
#define X(name, rows, in, out) rc |= bench(name, rows, in, out);
	CATS_BENCH_SHAPES(X)
#undef X
	if (rc == 0) {
		rc |= check();
	}
	semihost_puts(rc ? "done error\n" : "done ok\n");
	return rc;
}
