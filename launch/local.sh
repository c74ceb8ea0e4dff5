#!/usr/bin/env bash
# Local runner for small-model mode. Sets everything up on a fresh machine (venv + pinned requirements), then
# runs one job:
#   bash launch/local.sh experiment [flags...] # main job: generated tasks, pretrain, SFT/self-play/TSP arms, eval
#                                              # (tsp_jax.experiment, configs/experiment.py:synth; --seeds=3)
#   bash launch/local.sh demo [flags...]   # load/convert a model and decode a few prompts (tsp_jax.demo)
#   bash launch/local.sh test [pytest args] # the whole test suite (what CI runs)
#   bash launch/local.sh setup             # only the set-up: runtime + tests/reference (CPU JAX; what jobs run)
#   bash launch/local.sh setup --gpu       # the same + jax[cuda12] at the pinned jax version (NVIDIA GPUs)
#   bash launch/local.sh setup --runtime   # runtime only (requirements.txt: no test tools, no torch); with --gpu too
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TSP_VENV:-.venv}
PY=${PYTHON:-python3}

# The pinned version of the `jax==` line of requirements.txt (accelerator builds are installed at the same one).
jax_version() {
  sed -n 's/^jax==\([0-9][0-9a-z.]*\).*/\1/p' requirements.txt
}

# Python packages: requirements.txt (runtime) and, unless --runtime, requirements-test.txt (tests, the HF/torch
# reference); --gpu adds jax[cuda12] at the pinned jax version.
setup_python() {
  local gpu=0 runtime=0 arg
  for arg in "$@"; do
    case "$arg" in
      --gpu) gpu=1 ;;
      --runtime) runtime=1 ;;
      *) echo "setup: unknown option $arg (expected --gpu, --runtime)" >&2; return 2 ;;
    esac
  done
  local reqs=(-r requirements-test.txt)
  if [ "$runtime" = 1 ]; then reqs=(-r requirements.txt); fi
  if [ "$gpu" = 1 ]; then reqs+=("jax[cuda12]==$(jax_version)"); fi
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  # pip is quiet and fast when everything is already installed at the pinned versions.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${reqs[@]}"
}

# Native tools the verifier's sandboxed tests run (not Python packages).
setup_native() {
  # CWEval's cwe_1333_0 security test runs the `recheck` ReDoS checker (a native binary shipped as an npm
  # package); tsp_jax.verify.dynamic links it into each sandbox. Without npm that one task is skipped.
  if [ ! -x third_party/recheck/node_modules/recheck-linux-x64/recheck ]; then
    if command -v npm >/dev/null 2>&1; then
      npm install -s --prefix third_party/recheck --no-save --no-audit --no-fund recheck-linux-x64@4.5.0
    else
      echo "npm not found: CWEval cwe_1333_0 (recheck) will be skipped" >&2
    fi
  fi
}

# Toolchains of CWEval's C, C++, Go and JavaScript tests (tsp_jax.verify.dynamic): apt packages when root, the
# pinned npm packages (third_party/package.json + lock) into third_party/node_modules. Whatever cannot be
# installed is named here, and the verifier reports those tasks as skipped ("error", never a label).
setup_xlang() {
  local pkgs=(gcc g++ libsqlite3-dev libssl-dev libxml2-dev libjwt-dev libarchive-dev golang-go golang-golang-x-tools)
  local missing=() p
  for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update -q >/dev/null 2>&1 || true
        for p in "${missing[@]}"; do
          apt-get install -y -q "$p" >/dev/null 2>&1 && continue
          # libarchive-dev's archive version may trail an installed libarchive13 (a security update from
          # elsewhere): pin the library to the -dev package's version (same upstream release).
          if [ "$p" = libarchive-dev ]; then
            local v
            v=$(apt-cache policy libarchive-dev | sed -n 's/ *Candidate: //p')
            apt-get install -y -q --allow-downgrades libarchive-dev "libarchive13=$v" >/dev/null 2>&1 && continue
          fi
          echo "setup: apt package $p could not be installed: its CWEval tasks will be skipped" >&2
        done
      }
    else
      echo "setup: not root (or no apt-get); missing apt packages ${missing[*]}: their CWEval tasks will be skipped" >&2
    fi
  fi
  if [ ! -d third_party/node_modules ] || [ third_party/package-lock.json -nt third_party/node_modules ]; then
    if command -v npm >/dev/null 2>&1; then
      (cd third_party && npm ci -s --no-audit --no-fund) && touch third_party/node_modules || \
        echo "setup: npm ci in third_party failed: CWEval's JavaScript tasks will be skipped" >&2
    else
      echo "setup: npm not found: CWEval's JavaScript tasks will be skipped" >&2
    fi
  fi
}

setup() {
  setup_python "$@"
  setup_native
  setup_xlang
}

job=${1:-}
shift || true
case "$job" in
  setup) setup "$@" ;;
  experiment)
    setup
    exec "$VENV/bin/python" -m tsp_jax.experiment --config=configs/experiment.py:synth \
      --workdir="${WORKDIR:-runs/experiment}" "$@" ;;
  demo)
    setup
    exec "$VENV/bin/python" -m tsp_jax.demo --config=configs/demo.py:tiny --workdir="${WORKDIR:-runs/demo}" "$@" ;;
  test)
    setup
    # pytest exits 5 when it collected no tests: that is a failure here.
    rc=0
    "$VENV/bin/python" -m pytest -q -n 2 --durations=15 tests "$@" || rc=$?
    if [ "$rc" = 5 ]; then echo "no tests were collected" >&2; exit 1; fi
    exit "$rc" ;;
  *) echo "usage: bash launch/local.sh {setup|experiment|demo|test} [args]" >&2; exit 2 ;;
esac
