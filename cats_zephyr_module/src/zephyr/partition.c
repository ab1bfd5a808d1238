/*
 * The partition linked into the image (CMakeLists.txt: -DCATS_PARTITION_DIR, -DCATS_NODE_ID):
 * node CATS_NODE_ID's manifest.pb and, for a node (CONFIG_CATS_SERVICE), its weights.bin as
 * const arrays in flash; the core reads the weights in place. Without a partition both are
 * empty and the callers report -ENOENT at run time, so an image without one still compiles
 * every line a real one does.
 */
#include <stddef.h>
#include <stdint.h>

#include <zephyr/toolchain.h>

#include "cats_zephyr.h"

#ifdef CATS_HAVE_PARTITION
static const uint8_t cats_partition_manifest[] __aligned(4) = {
#include <cats/partition_manifest.inc>
};
#ifdef CONFIG_CATS_SERVICE
static const uint8_t cats_partition_blob[] __aligned(16) = {
#include <cats/partition_blob.inc>
};
#endif
#endif

const uint8_t *cats_partition_get_manifest(size_t *len)
{
#ifdef CATS_HAVE_PARTITION
	*len = sizeof(cats_partition_manifest);
	return cats_partition_manifest;
#else
	*len = 0;
	return NULL;
#endif
}

const uint8_t *cats_partition_get_blob(size_t *len)
{
#if defined(CATS_HAVE_PARTITION) && defined(CONFIG_CATS_SERVICE)
	*len = sizeof(cats_partition_blob);
	return cats_partition_blob;
#else
	*len = 0;
	return NULL;
#endif
}
