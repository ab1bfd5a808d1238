/*
 * Minimal Cortex-M4F startup for the bare-metal CATS images: vector table, FPU enable,
 * .data copy / .bss zero, then main(). No interrupts are used. With CATS_M4_SEMIHOST (the
 * QEMU images) main's return value and any fault end the program through semihosting; the
 * hardware image never executes BKPT (it would halt a core without a debugger) and sleeps.
 */
#include <stdint.h>

#ifdef CATS_M4_SEMIHOST
#include "semihost.h"
#endif

extern uint32_t __stack_top, __data_load, __data_start, __data_end, __bss_start, __bss_end;
extern int main(void);

void Reset_Handler(void);
void Fault_Handler(void);

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

__attribute__((noreturn)) void Reset_Handler(void)
{
	/* CP10/CP11 full access: the FPU must be on before any float instruction. */
	SCB_CPACR |= (0xFu << 20);
	__asm__ volatile("dsb\n\tisb" ::: "memory");

	const uint32_t *src = &__data_load;
	for (uint32_t *dst = &__data_start; dst < &__data_end;) {
		*dst++ = *src++;
	}
	for (uint32_t *dst = &__bss_start; dst < &__bss_end;) {
		*dst++ = 0;
	}
	int rc = main();
#ifdef CATS_M4_SEMIHOST
	semihost_exit(rc);
#else
	(void)rc;
#endif
	for (;;) {
		__asm__ volatile("wfi");
	}
}

__attribute__((noreturn)) void Fault_Handler(void)
{
#ifdef CATS_M4_SEMIHOST
	semihost_puts("cats m4: fault\n");
	semihost_exit(3);
#endif
	for (;;) {
		__asm__ volatile("wfi");
	}
}

/* Cortex-M4 core exceptions; the nRF52840's peripheral IRQs are not used here. */
__attribute__((section(".isr_vector"), used)) const void *const cats_vector_table[16] = {
	&__stack_top,              /* initial main stack pointer */
	(const void *)Reset_Handler,
	(const void *)Fault_Handler, /* NMI */
	(const void *)Fault_Handler, /* HardFault */
	(const void *)Fault_Handler, /* MemManage */
	(const void *)Fault_Handler, /* BusFault */
	(const void *)Fault_Handler, /* UsageFault */
	0, 0, 0, 0,
	(const void *)Fault_Handler, /* SVCall */
	(const void *)Fault_Handler, /* DebugMonitor */
	0,
	(const void *)Fault_Handler, /* PendSV */
	(const void *)Fault_Handler, /* SysTick */
};
