#!/usr/bin/env bash
# Install the real APM servers tests/apm/ exports to, each into its own virtual
# environment under $HISTORYMW_APM_DIR (default .apm/; reused when complete): they are servers
# that historymw talks to only over HTTP, so their dependencies never meet historymw's.
#
#   tests/apm/servers.sh && export \
#     HISTORYMW_TEST_PHOENIX_PYTHON=$PWD/.apm/phoenix/bin/python \
#     HISTORYMW_TEST_MLFLOW_PYTHON=$PWD/.apm/mlflow/bin/python
#
# Fails (non-zero) when either cannot be installed: CI must not silently skip them.
set -euo pipefail
cd "$(dirname "$0")/../.."

PHOENIX_SPEC="${HISTORYMW_PHOENIX_SPEC:-arize-phoenix>=20,<21}"
MLFLOW_SPEC="${HISTORYMW_MLFLOW_SPEC:-mlflow>=3,<4}"

installed() {  # venv dir, distribution: its version, or a non-zero status
  "$1/bin/python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$2" 2>/dev/null
}

install() {  # venv dir, requirement, distribution, module that must import afterwards
  local dir=$1 spec=$2 dist=$3 module=$4
  # The marker is written last: a venv an interrupted install left half-done is redone.
  if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$spec" ] && installed "$dir" "$dist" >/dev/null; then
    return 0
  fi
  rm -rf "$dir"
  python3 -m venv "$dir"
  # pip's warnings about absent local indexes are noise; its exit status is kept (pipefail).
  "$dir/bin/python" -m pip install -q --disable-pip-version-check "$spec" 2>&1 \
    | { grep -v '^WARNING: Location' || true; }
  "$dir/bin/python" -c "import $module"
  echo "$spec" > "$dir/.installed"
}

APM_DIR="${HISTORYMW_APM_DIR:-.apm}"
mkdir -p "$APM_DIR"
install "$APM_DIR/phoenix" "$PHOENIX_SPEC" arize-phoenix phoenix.server.main & phoenix=$!
install "$APM_DIR/mlflow" "$MLFLOW_SPEC" mlflow mlflow.server & mlflow=$!
status=0
wait "$phoenix" || { echo "servers.sh: installing $PHOENIX_SPEC failed" >&2; status=1; }
wait "$mlflow" || { echo "servers.sh: installing $MLFLOW_SPEC failed" >&2; status=1; }
[ "$status" = 0 ] && echo "servers.sh: arize-phoenix $(installed "$APM_DIR/phoenix" arize-phoenix)," \
  "mlflow $(installed "$APM_DIR/mlflow" mlflow)"
exit "$status"
