/*
 * A minimal host stand-in for Zephyr's <zephyr/ztest.h> (ZTEST, ZTEST_SUITE, zassert_*),
 * enough to compile and run the module's ztest suites on the host without a Zephyr tree
 * (tests/test_zephyr.py). It is not Zephyr: the real suites also build with west/twister.
 */
#ifndef CATS_ZTEST_SHIM_H_
#define CATS_ZTEST_SHIM_H_

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct shim_test {
	const char *suite_id, *test_id;
	void (*fn)(void);
};

#define SHIM_MAX_TESTS 64
static struct shim_test shim_tests[SHIM_MAX_TESTS];
static int shim_n_tests, shim_failed, shim_skipped, shim_cur_failed, shim_cur_skipped;

#define ZTEST(suite, name)                                                                  \
	static void suite##_##name(void);                                                  \
	__attribute__((constructor)) static void shim_reg_##suite##_##name(void)            \
	{                                                                                   \
		shim_tests[shim_n_tests++] = (struct shim_test){#suite, #name, suite##_##name}; \
	}                                                                                   \
	static void suite##_##name(void)

#define SHIM_FAIL(...)                                                                      \
	do {                                                                                \
		printf("    FAIL %s:%d: ", __FILE__, __LINE__);                                 \
		printf(__VA_ARGS__);                                                        \
		printf("\n");                                                               \
		shim_cur_failed = 1;                                                        \
		return;                                                                     \
	} while (0)

#define zassert_true(cond, ...)                                                             \
	do {                                                                                \
		if (!(cond)) {                                                              \
			SHIM_FAIL(__VA_ARGS__);                                             \
		}                                                                           \
	} while (0)
#define zassert_false(cond, ...) zassert_true(!(cond), __VA_ARGS__)
#define zassert_equal(a, b, ...) zassert_true((a) == (b), __VA_ARGS__)
#define zassert_not_equal(a, b, ...) zassert_true((a) != (b), __VA_ARGS__)
#define zassert_mem_equal(a, b, n, ...) zassert_true(memcmp((a), (b), (n)) == 0, __VA_ARGS__)

#define ztest_test_skip()                                                                   \
	do {                                                                                \
		shim_cur_skipped = 1;                                                       \
		return;                                                                     \
	} while (0)

#define ZTEST_SUITE(suite_name, pred, setup, before, after, teardown)                            \
	int main(void)                                                                      \
	{                                                                                   \
		for (int i = 0; i < shim_n_tests; i++) {                                    \
			shim_cur_failed = shim_cur_skipped = 0;                             \
			shim_tests[i].fn();                                                 \
			printf("%s %s.%s\n",                                                \
			       shim_cur_failed ? "FAIL" : (shim_cur_skipped ? "SKIP" : "PASS"), \
			       shim_tests[i].suite_id, shim_tests[i].test_id);                     \
			shim_failed += shim_cur_failed;                                     \
			shim_skipped += shim_cur_skipped;                                   \
		}                                                                           \
		printf("%d tests, %d failed, %d skipped\n", shim_n_tests, shim_failed,      \
		       shim_skipped);                                                       \
		return shim_failed ? 1 : 0;                                                 \
	}

#endif /* CATS_ZTEST_SHIM_H_ */
