# Sourced by scripts/demo and scripts/test: make sure .venv exists and holds this project.
# Usage: ensure_venv EXTRAS   (EXTRAS is "" or "[test]")
ensure_venv() {
  local extras="$1"
  if [[ ! -x .venv/bin/python ]]; then
    if ! python3 -m venv .venv 2>/dev/null; then
      # Debian's python3 comes without venv/ensurepip; python3-venv adds it.
      rm -rf .venv
      if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "installing python3-venv (Debian's python3 needs it for virtual environments)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv .venv
      else
        echo "error: python3 -m venv failed; install python3-venv (sudo apt-get install python3-venv) and rerun" >&2
        exit 1
      fi
    fi
  fi
  # Installed already from these very files: nothing to do (the project is installed editable,
  # so its code needs no reinstall; only its metadata, dependencies and pins do).
  local stamp
  stamp="${extras} $(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
  if [[ -f .venv/.installed && "$(<.venv/.installed)" == *"$stamp"* ]]; then
    return 0
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  # The versions the tests passed with (constraints.txt, written by scripts/lock).
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".${extras}"
  # "[test] <hash>" holds " <hash>": an install with the test extras also satisfies one without.
  printf '%s\n' "$stamp" >.venv/.installed
}
