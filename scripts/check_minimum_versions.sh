#!/usr/bin/env bash
# Runs the unit tests with every runtime dependency at the lowest release pyproject.toml allows.
#
#   scripts/check_minimum_versions.sh [DIR]     (DIR: where the virtualenv goes; a temp dir if absent)
#
# A floor in pyproject.toml is a promise that pinnace works there; nothing else checks it, since
# `make test` installs the newest releases. Each `name>=X` becomes the constraint `name==X.*`
# (the first minor release line of the floor) for every install below, so no test tool can pull
# a dependency above it unnoticed. Two floors are the test suite's, not the server's: protobuf
# (the dev extra asks 6.31 for descriptor checks in tests/unit/test_grpc_proto.py) and grpcio
# (tritonclient's generated code refuses to import below 1.67.1, whatever its metadata says).
# The end-to-end tests are left out, and so are the tests of runtimes whose frameworks are not
# installed here (torch, TensorFlow, XGBoost, LightGBM, OpenVINO): they skip.
#
# Needs network access to the package index, and takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-$(mktemp -d)}
PYTHON=${PYTHON:-python3}

"$PYTHON" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip

TEST_FLOORS="protobuf==6.31.* grpcio==1.67.*"
"$PY" - "$TEST_FLOORS" > "$WORK/constraints.txt" <<'EOF'
import re
import sys
import tomllib

raised = {line.split("==")[0]: line for line in sys.argv[1].split()}
with open("pyproject.toml", "rb") as f:
    requirements = tomllib.load(f)["project"]["dependencies"]
for requirement in requirements:
    match = re.match(r"\s*([A-Za-z0-9_.-]+)[^;]*?>=\s*([0-9.]+)", requirement)
    if match is None:
        sys.exit(f"no floor in {requirement!r}: give every dependency one")
    name, floor = match.groups()
    print(raised.get(name, f"{name}=={floor}.*"))
EOF
echo "constraints:"; sed 's/^/  /' "$WORK/constraints.txt"

"${PIP[@]}" install -c "$WORK/constraints.txt" -e ".[sklearn,convert,tracing]" \
    "tritonclient[http,grpc]>=2.70" pytest pytest-timeout pytest-asyncio
NAMES=$(cut -d= -f1 "$WORK/constraints.txt" | sed 's/[-_]/[-_]/g' | paste -sd'|')
"$PY" -m pip list --format=freeze | grep -iE "^($NAMES)==" | sed 's/^/installed: /'
"$PY" -m pytest -q -p no:cacheprovider tests/unit
