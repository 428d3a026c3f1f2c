#!/usr/bin/env bash
# Installs the Debian packages that building optiq, its tests (fuzzing and
# sanitizers included) and the Lab's browser test need. Idempotent: packages
# already present are not touched, and nothing is fetched when all are there.
# Runs as root or through sudo; non-interactive.
set -euo pipefail

PACKAGES=(
    # toolchain
    build-essential pkg-config make gcc
    clang libclang-rt-14-dev      # libFuzzer target of the safetensors parser
    # libraries the engine links
    libcjson-dev                  # JSON (config.json, safetensors headers, API bodies)
    libmicrohttpd-dev             # HTTP server
    libcurl4-openssl-dev          # http(s) image URLs, hub downloads
    libjpeg62-turbo-dev libpng-dev zlib1g-dev libwebp-dev libgif-dev   # image decoding (zlib: PNG iTXt)
    libpcre2-dev libutf8proc-dev  # tokenizer pre-splitting and normalization
    libopenblas-dev               # dense f32 GEMM
    # tests
    xz-utils                      # compressed tokenizer fixtures
    python3 python3-venv          # reference fixtures (optional) and the Python binding tests
    chromium chromium-driver      # the Lab's browser test
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: all ${#PACKAGES[@]} packages present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
