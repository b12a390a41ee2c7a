#!/usr/bin/env bash
# One-time set-up of the benchmark (Debian 12, root). Idempotent: installs wrk and
# nginx-light from Debian's packages if missing, then bench/.venv with the project
# (editable) and bench/requirements.txt.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v taskset >/dev/null || need+=(util-linux)
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "need root to apt-get install: ${need[*]}" >&2
    exit 2
  fi
  # Another set-up may hold the dpkg lock (e.g. a second harness installing the same
  # packages); apt waits for it up to 10 minutes instead of failing at once.
  apt-get -o DPkg::Lock::Timeout=600 update
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${need[@]}"
fi
# Debian's postinst may start the packaged nginx service on :80; the bench never uses it.

if [[ ! -x "$here/.venv/bin/python" ]]; then
  python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install -q --upgrade pip
"$here/.venv/bin/pip" install -q -r "$here/requirements.txt"
# The project last: the baselines above work even while it does not install yet.
if ! "$here/.venv/bin/pip" install -q -e "$repo[postgres,redis]" -c "$repo/constraints.txt" >"$here/.venv/project-install.log" 2>&1; then
  tail -n 5 "$here/.venv/project-install.log" >&2
  echo "baselines installed, but the project ($repo) failed to install (log: $here/.venv/project-install.log);" \
       "the gateway-* targets will not run" >&2
  exit 1
fi
echo "ok: $(wrk --version 2>&1 | head -1 | cut -c1-40); $(nginx -v 2>&1); $("$here/.venv/bin/python" -V)"
