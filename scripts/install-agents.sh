#!/usr/bin/env bash
# Installs the external agent CLIs orch can run as workers, all from PyPI,
# one virtualenv each under ~/.cache/orch-agents, and prints where each
# binary is:
#
#   claude-code     the `claude` binary bundled in the claude-agent-sdk wheel
#   codex           the `codex` binary of openai-codex-cli-bin
#   aider           aider-chat
#   mini-swe-agent  mini-swe-agent (`mini`)
#
# Idempotent: what is installed already is kept. Its only output on stdout
# is one `ORCH_AGENT_<NAME>=<path>` line per agent found (eval-able); what
# it does goes to stderr. An agent that cannot be installed is reported and
# skipped; the exit code is 1 only when none could be.
#
# Usage:
#   eval "$(scripts/install-agents.sh)"     # sets ORCH_AGENT_CLAUDE_CODE, …
#   scripts/install-agents.sh --print       # only print what is installed
#
# Environment (optional):
#   PYTHON            interpreter for the venv (default python3)
#   ORCH_AGENTS_DIR   where the virtualenvs go (default ~/.cache/orch-agents)
set -uo pipefail

py="${PYTHON:-python3}"
dir="${ORCH_AGENTS_DIR:-$HOME/.cache/orch-agents}"
say() { echo "install-agents: $*" >&2; }

# One virtualenv per agent: aider pins exact versions (numpy, click,
# huggingface-hub) that mini-swe-agent's dependencies would move. Pinned so
# CI installs what the tests were written against.
AGENTS=(
    "claude-code claude-agent-sdk==0.2.184"
    "codex openai-codex-cli-bin==0.163.0"
    "aider aider-chat==0.86.2"
    "mini-swe-agent mini-swe-agent==2.4.6"
)

make_venv() {
    local venv="$1"
    [ -x "$venv/bin/python" ] && return 0
    say "creating the virtualenv $venv"
    "$py" -m venv "$venv" 2>/dev/null && return 0
    # Debian's python3 without python3-venv: virtualenv from PyPI instead.
    "$py" -m pip install -q virtualenv >&2 ||
        "$py" -m pip install -q --break-system-packages virtualenv >&2 || return 1
    "$py" -m virtualenv -q "$venv" >&2
}

install_one() {
    local venv="$dir/$1" pkg="$2" name version have
    name="${pkg%%==*}"
    version="${pkg##*==}"
    make_venv "$venv" || {
        say "cannot create a virtualenv with $py (apt-get install python3-venv); $1 skipped"
        return 1
    }
    have=$("$venv/bin/python" -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
    [ "$have" = "$version" ] && return 0
    say "installing $pkg into $venv"
    "$venv/bin/python" -m pip install -q "$pkg" >&2 || {
        say "could not install $pkg; $1 skipped"
        return 1
    }
}

install_all() {
    export PIP_ROOT_USER_ACTION=ignore
    unset PIP_NO_CACHE_DIR
    local entry
    for entry in "${AGENTS[@]}"; do
        install_one ${entry}
    done
    return 0
}

# The first executable file named $2 under agent $1's site-packages.
bundled() {
    local sp
    sp=$("$dir/$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null) ||
        return 0
    find "$sp" -type f -name "$2" -perm -u+x 2>/dev/null | head -1
}

print_found() {
    local found=0 p
    p=$(bundled claude-code claude)
    [ -n "$p" ] && { echo "ORCH_AGENT_CLAUDE_CODE=$p"; found=1; }
    p=$(bundled codex codex)
    [ -n "$p" ] && { echo "ORCH_AGENT_CODEX=$p"; found=1; }
    [ -x "$dir/aider/bin/aider" ] && { echo "ORCH_AGENT_AIDER=$dir/aider/bin/aider"; found=1; }
    [ -x "$dir/mini-swe-agent/bin/mini" ] && {
        echo "ORCH_AGENT_MINI_SWE_AGENT=$dir/mini-swe-agent/bin/mini"
        found=1
    }
    [ "$found" = 1 ]
}

if [ "${1:-}" != "--print" ]; then
    install_all
fi
print_found || {
    say "no agent CLI is installed in $dir"
    exit 1
}
