#!/usr/bin/env bash
# Builds the virtual environments of benchmarks/peers.py under .peers/ (git-ignored):
#
#   bash benchmarks/peers_env.sh            # with the project's environment active
#
# .peers/pfl: pfl-research 0.6.0, which pins dp-accounting 0.5.1 (fedsim needs 0.6).
# Its own packages come first; torch (and what else it does not install itself) comes
# from the environment that runs this script, through a .pth file, since torch is
# not re-downloaded here.
# BlazeFL needs Python >= 3.12 (3.0.0a1: 3.13; 3.0.0: 3.14) and a torch built for it;
# with PYTHON313=/path/to/python3.13 (and a torch wheel for it installable by pip) the
# script builds .peers/blazefl too.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
BASE=$("$PY" -c 'import sys; print(sys.base_prefix)')/bin/python3
SITE=$("$PY" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
mkdir -p .peers

make_env() {  # NAME PYTHON PACKAGES...
  local name=$1 python=$2
  shift 2
  rm -rf ".peers/$name"
  "$python" -m venv ".peers/$name"
  local sp
  sp=$(".peers/$name/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # after the env's own packages; before pip runs, so that it finds torch installed
  echo "$SITE" > "$sp/zz_torch_from_project.pth"
  ".peers/$name/bin/python" -m pip install --quiet "$@"
  echo "built .peers/$name: $(".peers/$name/bin/python" -m pip freeze | grep -i -E "^($name|pfl|blazefl)=" | tr '\n' ' ')"
}

make_env pfl "$BASE" "pfl[pytorch]==0.6.0"
if [ -n "${PYTHON313:-}" ]; then
  make_env blazefl "$PYTHON313" "blazefl==3.0.0a1" torch
fi
