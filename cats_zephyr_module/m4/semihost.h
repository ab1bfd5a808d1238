/*
 * ARM semihosting (BKPT 0xAB on M-profile): console output and exit code under QEMU
 * (`-semihosting-config enable=on,target=native`) or a debugger. On a board without a
 * debugger attached, BKPT would halt the core; the node image only uses it in its self-test
 * exit path, and the benchmark only runs under QEMU.
 */
#ifndef CATS_M4_SEMIHOST_H_
#define CATS_M4_SEMIHOST_H_

#include <stdint.h>

#define SEMIHOST_SYS_WRITE0 0x04
#define SEMIHOST_SYS_EXIT 0x18
#define SEMIHOST_ADP_APPLICATION_EXIT 0x20026 /* exit status 0 */
#define SEMIHOST_ADP_RUNTIME_ERROR 0x20023    /* exit status 1 */

static inline int semihost_call(int op, const void *arg)
{
	register int r0 __asm__("r0") = op;
	register const void *r1 __asm__("r1") = arg;
	__asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
	return r0;
}

static inline void semihost_puts(const char *s)
{
	semihost_call(SEMIHOST_SYS_WRITE0, s);
}

__attribute__((noreturn)) static inline void semihost_exit(int rc)
{
	/* 32-bit ARM SYS_EXIT takes the reason code itself in r1 (not a parameter block). */
	semihost_call(SEMIHOST_SYS_EXIT,
		      (const void *)(uintptr_t)(rc == 0 ? SEMIHOST_ADP_APPLICATION_EXIT
							: SEMIHOST_ADP_RUNTIME_ERROR));
	for (;;) {
	}
}

#endif /* CATS_M4_SEMIHOST_H_ */
