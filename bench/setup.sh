#!/usr/bin/env bash
# Create bench/.venv with the peer systems and beatq installed editable: Celery (+ celery-redbeat),
# Huey, RQ (+ rq-scheduler), arq, Dramatiq, taskiq (+ taskiq-redis), and matplotlib for the chart. The peers live only
# here: none is ever a dependency of beatq itself.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-python3}"

[ -x "$here/.venv/bin/python" ] || "$py" -m venv "$here/.venv"
pip="$here/.venv/bin/python -m pip"
$pip install -q --upgrade pip
$pip install -q 'celery[redis]==5.7.*' 'celery-redbeat==2.4.*' redis
$pip install -q 'huey==3.5.*'
$pip install -q 'rq==2.12.*' 'rq-scheduler==0.14.*' 'dramatiq[redis]==2.2.*'
# arq 0.28 pins redis<6, Celery's kombu needs redis>=6.4: arq goes in without its pin (it runs
# on redis-py 6 as far as this benchmark uses it) and redis-py stays at Celery's version.
$pip install -q --no-deps 'arq==0.28.*'
# taskiq for bench/async_peers.py: taskiq-redis 1.2 needs redis-py 8, which kombu 5.7 allows (<9).
$pip install -q 'taskiq==0.13.*' 'taskiq-redis==1.2.*'
$pip install -q 'matplotlib==3.11.*'
if [ -f "$root/pyproject.toml" ] || [ -f "$root/setup.py" ]; then
    $pip install -q -e "$root"
else
    echo "setup.sh: no package metadata in $root yet; beatq not installed" >&2
fi
echo "bench venv ready: $here/.venv/bin/python"
