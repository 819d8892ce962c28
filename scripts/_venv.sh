# Sourced by scripts/demo, scripts/test and scripts/bench: make .venv with drain installed.
# Needs only Python 3.11+ with pip and venv. Re-installs when pyproject.toml or requirements.lock
# changes; versions come from requirements.lock (pip constraints: remade by scripts/lock).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3 python3.13 python3.12 python3.11 python; do
    if command -v "$candidate" >/dev/null 2>&1 \
       && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      python="$candidate"; break
    fi
  done
fi
if [ -z "$python" ]; then
  echo "drain needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  echo "setting up .venv with $("$python" --version)" >&2
  "$python" -m venv .venv
fi
stamp=.venv/.drain-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[test]' >&2
  touch "$stamp"
fi
