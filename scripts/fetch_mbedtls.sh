#!/usr/bin/env bash
# mbed TLS sources (AES + CCM* and what they need) for the bare-metal Cortex-M4 build of the node
# core (cats_zephyr_module/m4): the same version as the host's Debian libmbedtls-dev, from
# Debian's source archive, pinned by version and sha256. The host build links the Debian
# library; Zephyr builds use Zephyr's mbedtls module.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=2.28.3
SHA256=3b4953aa55a681e084d31892d9904cc5328d6b4958ea57b90ae4b4f94ae69a8d
TOP=Mbed-TLS-mbedtls-8f97ca5  # the tarball's top directory
URL="http://deb.debian.org/debian/pool/main/m/mbedtls/mbedtls_${VERSION}.orig.tar.gz"
DEST=build/third_party
DIR="$DEST/mbedtls-$VERSION"
[ -f "$DIR/library/ccm.c" ] && exit 0
mkdir -p "$DEST"
tmp="$(mktemp "$DEST/mbedtls.XXXXXX.tar.gz")"
trap 'rm -f "$tmp"' EXIT
echo "setup: fetching mbed TLS $VERSION sources"
python3 - "$URL" "$tmp" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=120) as r, open(sys.argv[2], "wb") as f:
    f.write(r.read())
PY
echo "$SHA256  $tmp" | sha256sum -c --quiet -
mkdir -p "$DIR"
tar -xzf "$tmp" -C "$DIR" --strip-components=1 "$TOP/include" "$TOP/library" "$TOP/LICENSE"
