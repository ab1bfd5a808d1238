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
 * Output (semihosting), one line per measurement, parsed by bench/kernels/run.py:
 *   calib <turns> <instructions>
 *   shape <name> <rows> <in> <out> <reps> <path dsp|c> <instructions> <checksum>
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
static uint64_t scratch[(CATS_MATMUL_SCRATCH_BYTES(CATS_BENCH_MAX_IN) + 7) / 8];

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
	semihost_puts(rc ? "done error\n" : "done ok\n");
	return rc;
}
