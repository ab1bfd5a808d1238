/*
 * The int8 matmul shapes of the `verytiny` preset (F = 128, 16 heads, FFN 128, 32 tokens of a
 * 16-sample patch, horizon 96) that bench/kernels measures, shared by the M4 benchmark image
 * and checked against bench/kernels/run.py's SHAPES (same names, same order).
 *
 * Per node at D nodes (p = 0: every node holds all 128 input columns): the node computes its
 * own F/D output columns of q, k, v, the output projection and FFN layer 2, its FFN/D hidden
 * units, F/D embedding columns from the 16-sample patch, and horizon/D outputs of the head
 * (one row: the last token). Monolithic: the same layers for one device holding everything.
 *   name, rows (tokens), in, out
 */
#define CATS_BENCH_SHAPES(X)                                                                \
	X("d8.block", 32, 128, 16)  /* q/k/v/o/w1/w2 of one node at D=8 */                  \
	X("d8.embed", 32, 16, 16)                                                           \
	X("d8.head", 1, 128, 12)                                                            \
	X("d16.block", 32, 128, 8)  /* at D=16 */                                           \
	X("d16.embed", 32, 16, 8)                                                           \
	X("d16.head", 1, 128, 6)                                                            \
	X("mono.qkvo", 32, 128, 128) /* q/k/v/out-proj, 128x128, 32 tokens */               \
	X("mono.ffn", 32, 128, 128)  /* FFN layers 1/2, 128x128 (FFN = F = 128) */          \
	X("mono.embed", 32, 16, 128)                                                        \
	X("mono.head", 1, 128, 96)

#define CATS_BENCH_MAX_ROWS 32
#define CATS_BENCH_MAX_IN 128
#define CATS_BENCH_MAX_OUT 128
