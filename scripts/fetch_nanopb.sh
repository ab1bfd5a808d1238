#!/usr/bin/env bash
# nanopb's C runtime (pb_encode.c, pb_decode.c, pb_common.c) for the host and Cortex-M4 builds
# of the node core, from Debian's source archive, pinned by version and sha256. Zephyr builds
# use Zephyr's own nanopb module instead. The Python generator is the same version (PyPI
# nanopb==0.4.9.1, requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.4.9.1
SHA256=4575944a468718ef25f05eb01d994364650b581563089a9841986bb1e460eac3
URL="http://deb.debian.org/debian/pool/main/n/nanopb/nanopb_${VERSION}.orig.tar.gz"
DEST=build/third_party
DIR="$DEST/nanopb-$VERSION"

[ -f "$DIR/pb_decode.c" ] && exit 0
mkdir -p "$DEST"
tmp="$(mktemp "$DEST/nanopb.XXXXXX.tar.gz")"
trap 'rm -f "$tmp"' EXIT
echo "setup: fetching nanopb $VERSION sources"
python3 - "$URL" "$tmp" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=120) as r, open(sys.argv[2], "wb") as f:
    f.write(r.read())
PY
echo "$SHA256  $tmp" | sha256sum -c --quiet -
tar -xzf "$tmp" -C "$DEST" "nanopb-$VERSION/pb.h" "nanopb-$VERSION/pb_common.h" \
    "nanopb-$VERSION/pb_common.c" "nanopb-$VERSION/pb_encode.h" "nanopb-$VERSION/pb_encode.c" \
    "nanopb-$VERSION/pb_decode.h" "nanopb-$VERSION/pb_decode.c" "nanopb-$VERSION/LICENSE.txt"
