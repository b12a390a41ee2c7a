#!/usr/bin/env bash
# Runs proxy_bench.py with bench/.venv's python. See bench/run.sh --help.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ ! -x "$here/.venv/bin/python" ]]; then
  echo "no venv at $here/.venv: run bash $here/setup.sh first" >&2
  exit 2
fi
exec "$here/.venv/bin/python" "$here/proxy_bench.py" "$@"
