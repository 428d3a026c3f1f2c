#!/usr/bin/env bash
# Create (or refresh) the reference Python environment in tools/reference/.venv with the
# pinned CPU build of MLX, mlx-lm and friends.  Idempotent: when the venv already matches
# requirements.txt + constraints.txt it only re-checks that MLX imports.
#
# Usage: bash tools/reference/setup.sh        (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
py="${PYTHON:-python3}"
stamp="$venv/.requirements.sha256"

want="$(cat "$here/requirements.txt" "$here/constraints.txt" "$here/requirements-nodeps.txt" | sha256sum | cut -d' ' -f1)"

if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    echo "setup.sh: need Python >= 3.10, found $("$py" --version 2>&1)" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "setup.sh: creating $venv"
    "$py" -m venv "$venv"
fi

if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "setup.sh: installing pinned packages"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$here/requirements.txt" -c "$here/constraints.txt"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        -r "$here/requirements-nodeps.txt"
    echo "$want" > "$stamp"
else
    echo "setup.sh: $venv is up to date"
fi

"$venv/bin/python" -c 'import mlx.core as mx, mlx_lm; print("mlx", mx.__version__, "mlx-lm", mlx_lm.__version__, "default device:", mx.default_device())'
