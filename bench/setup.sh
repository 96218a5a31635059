#!/usr/bin/env bash
# Create bench/.venv with the peer systems (Celery, celery-redbeat) and beatq installed editable.
# Celery lives only here: it is never a dependency of beatq itself.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-python3}"

[ -x "$here/.venv/bin/python" ] || "$py" -m venv "$here/.venv"
pip="$here/.venv/bin/python -m pip"
$pip install -q --upgrade pip
$pip install -q 'celery[redis]==5.7.*' 'celery-redbeat==2.4.*' redis
$pip install -q 'huey==3.5.*'
if [ -f "$root/pyproject.toml" ] || [ -f "$root/setup.py" ]; then
    $pip install -q -e "$root"
else
    echo "setup.sh: no package metadata in $root yet; beatq not installed" >&2
fi
echo "bench venv ready: $here/.venv/bin/python"
