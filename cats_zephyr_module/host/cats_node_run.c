/*
 * cats_node_run: run a whole exported swarm in one process on the host C core.
 *
 *   cats_node_run [-m MASK] [-f ROWS] EXPORT_DIR INPUT
 *
 * EXPORT_DIR holds node-<d>/manifest.pb + weights.bin (`cats export`). INPUT is raw int8,
 * one or more inferences of tokens x patch bytes each. MASK (optional) is raw bytes
 * [exchange][sender][receiver]: 0 loses that sender's frame at that receiver (applied to every
 * inference). -f splits every column into row fragments of ROWS rows, as a link with a small
 * MTU would. Prints one line per inference: the int8 outputs; lost-column counts and timing
 * go to stderr. Exit status: 0 ok, 1 usage or I/O, 2 a node call failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cats/cats_node.h"
#include "port_host.h"

#define MAX_NODES 64

struct file {
	uint8_t *data;
	size_t len;
};

static int read_file(const char *path, struct file *f)
{
	FILE *fp = fopen(path, "rb");
	long len;

	f->data = NULL;
	f->len = 0;
	if (fp == NULL || fseek(fp, 0, SEEK_END) != 0 || (len = ftell(fp)) < 0 ||
	    fseek(fp, 0, SEEK_SET) != 0) {
		if (fp != NULL) {
			fclose(fp);
		}
		return -1;
	}
	f->len = (size_t)len;
	f->data = malloc(f->len > 0 ? f->len : 1); /* malloc: aligned for the blob's int32s */
	if (f->data == NULL || fread(f->data, 1, f->len, fp) != f->len) {
		fclose(fp);
		free(f->data);
		f->data = NULL;
		return -1;
	}
	fclose(fp);
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: cats_node_run [-m MASK] [-f ROWS] EXPORT_DIR INPUT\n");
	return 1;
}

struct swarm {
	int count;
	struct file man[MAX_NODES], blob[MAX_NODES];
	uint8_t *arena[MAX_NODES];
	struct cats_node *node[MAX_NODES];
};

static void swarm_free(struct swarm *w)
{
	for (int d = 0; d < MAX_NODES; d++) {
		free(w->man[d].data);
		free(w->blob[d].data);
		free(w->arena[d]);
	}
}

static int load_node(struct swarm *w, const char *dir, int d)
{
	char path[4096];
	size_t need, got = 0;
	int rc;

	snprintf(path, sizeof(path), "%s/node-%d/manifest.pb", dir, d);
	if (read_file(path, &w->man[d]) != 0) {
		fprintf(stderr, "cats_node_run: cannot read %s\n", path);
		return 1;
	}
	snprintf(path, sizeof(path), "%s/node-%d/weights.bin", dir, d);
	if (read_file(path, &w->blob[d]) != 0) {
		fprintf(stderr, "cats_node_run: cannot read %s\n", path);
		return 1;
	}
	need = cats_node_arena_needed(w->man[d].data, w->man[d].len);
	w->arena[d] = malloc(need > 0 ? need : 1);
	if (w->arena[d] == NULL) {
		return 1;
	}
	rc = cats_node_init(&w->node[d], w->man[d].data, w->man[d].len, w->blob[d].data,
			    w->blob[d].len, w->arena[d], need, &got);
	if (rc != CATS_OK) {
		fprintf(stderr, "cats_node_run: node %d: %s (%d), arena %zu/%zu\n", d,
			cats_strerror(rc), rc, need, got);
		return 2;
	}
	return 0;
}

/* One inference through every node; returns 0 or 2 (a call failed). */
static int infer(struct swarm *w, uint32_t id, const int8_t *in, size_t in_len,
		 const uint8_t *mask, int frag, int8_t *out, unsigned *lost)
{
	const int D = w->count;
	const uint16_t n_ex = cats_node_exchanges(w->node[0]);
	int8_t col[65536];

	*lost = 0;
	for (int d = 0; d < D; d++) {
		if (cats_node_begin(w->node[d], id, in, in_len) != CATS_OK) {
			return 2;
		}
	}
	for (uint16_t e = 0; e < n_ex; e++) {
		for (int s = 0; s < D; s++) {
			const struct cats_exchange *ex = cats_node_exchange(w->node[s], e);
			const int step = frag > 0 && frag < ex->rows ? frag : ex->rows;

			for (uint16_t k = 0; k < ex->n_kept; k++) {
				if (cats_node_outgoing(w->node[s], k, 0, ex->rows, col) != CATS_OK) {
					return 2;
				}
				for (int r = 0; r < D; r++) {
					if (r == s || (mask != NULL && !mask[((size_t)e * D + s) * D + r])) {
						continue;
					}
					for (int row = 0; row < ex->rows; row += step) {
						const int cnt = row + step <= ex->rows ? step : ex->rows - row;

						if (cats_node_put(w->node[r], e, (uint16_t)s, ex->kept[k],
								  (uint16_t)row, (uint16_t)cnt,
								  col + row) != CATS_OK) {
							return 2;
						}
					}
				}
			}
		}
		for (int d = 0; d < D; d++) {
			uint16_t l = 0;

			if (cats_node_compute(w->node[d], &l) != CATS_OK) {
				return 2;
			}
			*lost += l;
		}
	}
	for (int d = 0; d < D; d++) {
		uint16_t start, count;
		const int8_t *y = cats_node_output(w->node[d], &start, &count);

		if (y == NULL) {
			return 2;
		}
		memcpy(out + start, y, count);
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *mask_path = NULL;
	int frag = 0, argi = 1, rc = 0;
	struct swarm *w = calloc(1, sizeof(*w));
	struct file input = {NULL, 0}, mask = {NULL, 0};
	struct cats_port port;

	cats_port_host_init(&port);
	if (w == NULL) {
		return 1;
	}
	for (; argi < argc && argv[argi][0] == '-'; argi++) {
		if (strcmp(argv[argi], "-m") == 0 && argi + 1 < argc) {
			mask_path = argv[++argi];
		} else if (strcmp(argv[argi], "-f") == 0 && argi + 1 < argc) {
			frag = atoi(argv[++argi]);
		} else {
			free(w);
			return usage();
		}
	}
	if (argc - argi != 2) {
		free(w);
		return usage();
	}
	rc = load_node(w, argv[argi], 0);
	w->count = rc == 0 ? cats_node_count(w->node[0]) : 0;
	if (w->count > MAX_NODES) {
		fprintf(stderr, "cats_node_run: %d nodes, at most %d\n", w->count, MAX_NODES);
		rc = 1;
	}
	for (int d = 1; rc == 0 && d < w->count; d++) {
		rc = load_node(w, argv[argi], d);
		if (rc == 0 && (cats_node_id(w->node[d]) != d ||
				memcmp(cats_node_partition_hash(w->node[d]),
				       cats_node_partition_hash(w->node[0]), 32) != 0)) {
			fprintf(stderr, "cats_node_run: node-%d belongs to another partition\n", d);
			rc = 1;
		}
	}
	if (rc == 0 && read_file(argv[argi + 1], &input) != 0) {
		fprintf(stderr, "cats_node_run: cannot read %s\n", argv[argi + 1]);
		rc = 1;
	}
	if (rc == 0 && mask_path != NULL && read_file(mask_path, &mask) != 0) {
		fprintf(stderr, "cats_node_run: cannot read %s\n", mask_path);
		rc = 1;
	}
	if (rc == 0) {
		const struct cats_model_shape *s = cats_node_shape(w->node[0]);
		const size_t in_len = (size_t)s->tokens * s->patch;
		const size_t mask_len =
			(size_t)cats_node_exchanges(w->node[0]) * (size_t)w->count * (size_t)w->count;
		int8_t *out = malloc(s->outputs);

		if (out == NULL || input.len == 0 || input.len % in_len != 0 ||
		    (mask_path != NULL && mask.len != mask_len)) {
			fprintf(stderr, "cats_node_run: input must be k x %zu bytes%s\n", in_len,
				mask_path != NULL ? ", mask exchanges x D x D bytes" : "");
			rc = 1;
		}
		for (size_t i = 0; rc == 0 && i < input.len / in_len; i++) {
			unsigned lost;
			const uint32_t t0 = port.now_ms(port.ctx);
			char msg[96];

			rc = infer(w, (uint32_t)i, (const int8_t *)input.data + i * in_len, in_len,
				   mask.data, frag, out, &lost);
			if (rc != 0) {
				fprintf(stderr, "cats_node_run: inference %zu failed\n", i);
				break;
			}
			for (int o = 0; o < s->outputs; o++) {
				printf(o == 0 ? "%d" : " %d", out[o]);
			}
			printf("\n");
			snprintf(msg, sizeof(msg), "inference %zu: %u columns lost, %u ms", i, lost,
				 (unsigned)(port.now_ms(port.ctx) - t0));
			port.log(port.ctx, CATS_LOG_INF, msg);
		}
		free(out);
	}
	free(input.data);
	free(mask.data);
	swarm_free(w);
	free(w);
	return rc;
}
