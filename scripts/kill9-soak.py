#!/usr/bin/env python3
"""kill -9 soak: a 20-task run on a real repository, killed with SIGKILL at
random moments at least 50 times, then run to the end. Reports what a crash
must never cause: tasks lost or merged twice, tasks failed for
infrastructure reasons, red commits on main, and orch processes (sandboxed
children included) still alive one second after a kill.

Usage: scripts/kill9-soak.py [--orch target/debug/orch] [--kills 50]
       [--tasks 20] [--workers 4] [--seed 7] [--keep]
Only the model is scripted (the replay provider, 150 ms per answer).
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def git(repo, *args):
    return subprocess.run(
        ["git", "-c", "user.name=soak", "-c", "user.email=soak@example.invalid", *args],
        cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def setup(root: Path, tasks: int, workers: int):
    repo = root / "calc"
    repo.mkdir()
    (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (repo / "test_calc.py").write_text(
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    (repo / ".gitignore").write_text("__pycache__/\n.pytest_cache/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    responses = []
    for i in range(tasks):
        responses.append({
            "model": "worker", "when": f"# Task: soak-{i:02}\n", "times": 0, "delay_ms": 150,
            "tool_calls": [
                {"name": "write_file", "arguments": {
                    "path": f"mod{i:02}.py", "content": f"def f():\n    return {i}\n"}},
                {"name": "write_file", "arguments": {
                    "path": f"test_mod{i:02}.py",
                    "content": f"from mod{i:02} import f\n\n\ndef test_f():\n    assert f() == {i}\n"}},
                {"name": "run", "arguments": {"command": "sleep 0.3; python3 -m pytest -q -p no:cacheprovider"}},
                {"name": "finish", "arguments": {"summary": f"module {i}"}},
            ]})
    responses.append({"model": "judge", "times": 0, "delay_ms": 100,
                      "json": {"passed": True, "score": 9, "reasoning": "ok", "issues": []}})
    (root / "script.json").write_text(json.dumps({"responses": responses}))
    (root / "orch.toml").write_text(f"""data_dir = ".orch"

[providers.replay]
kind = "replay"
script = "script.json"

[[projects]]
name = "calc"
path = "calc"
test_command = "python3 -m pytest -q -p no:cacheprovider"
worker_model = "replay:worker"
judge_model = "replay:judge"
max_workers = {workers}
max_attempts = 3
auto_plan = false
sandbox = "bwrap"
""")
    return repo


def orch(args, root, orch_bin, **kw):
    return subprocess.run([orch_bin, "--config", str(root / "orch.toml"), *args],
                          cwd=root, capture_output=True, text=True, **kw)


def ours(root: Path):
    """PIDs whose command line or working directory is under `root`."""
    found = []
    needle = str(root)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if needle in cmd or cwd.startswith(needle):
            found.append((int(entry), cmd.strip()[:120]))
    return found


def orch_cgroups():
    left = []
    for base in Path("/sys/fs/cgroup").glob("**/orch-sandbox"):
        left.extend(p for p in base.iterdir() if p.is_dir())
    return left


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--orch", default="target/debug/orch")
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    orch_bin = str(Path(a.orch).resolve())
    random.seed(a.seed)
    root = Path(tempfile.mkdtemp(prefix="orch-soak-"))
    repo = setup(root, a.tasks, a.workers)
    ids = []
    for i in range(a.tasks):
        out = orch(["add-task", "--project", "calc", "--title", f"soak-{i:02}", "--json"], root, orch_bin)
        ids.append(json.loads(out.stdout)["id"])

    kills, left_after_kill, runs = 0, [], 0
    started = time.time()
    while kills < a.kills:
        runs += 1
        p = subprocess.Popen([orch_bin, "--config", str(root / "orch.toml"), "run", "--project", "calc",
                              "--until-idle", "--cycles", "100", "--quiet"],
                             cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(random.uniform(0.3, 2.5))
        if p.poll() is not None:
            # Finished before the kill: everything merged. Add more work.
            break
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        time.sleep(1.0)
        alive = ours(root)
        if alive:
            left_after_kill.append(alive)
    # Run to the end without kills.
    final = orch(["run", "--project", "calc", "--until-idle", "--cycles", "100", "--quiet"], root, orch_bin,
                 timeout=1800)
    tasks = json.loads(orch(["tasks", "--project", "calc", "--json"], root, orch_bin).stdout)
    by_status = {}
    for t in tasks:
        by_status[t["status"]] = by_status.get(t["status"], 0) + 1
    lost = [i for i in ids if i not in {t["id"] for t in tasks if t["status"] == "merged"}]
    duplicated = 0
    for i in ids:
        merges = git(repo, "log", "--merges", "--format=%H", f"--grep=Task: {i}", "main").split()
        duplicated += max(0, len(merges) - 1)
    infra = sum(t.get("infra_failures", 0) for t in tasks)
    infra_failed = sum(1 for t in tasks if t["status"] == "failed"
                       and "infrastructure" in (t.get("failure_reason") or ""))
    interrupted = 0
    counted = sum(t["attempts"] for t in tasks)
    for i in ids:
        shown = json.loads(orch(["show", i, "--json"], root, orch_bin).stdout)
        interrupted += sum(1 for x in shown["attempts"] if x["status"] == "interrupted")
    red = []
    check = root / "check"
    for sha in git(repo, "rev-list", "--first-parent", "main").split():
        if check.exists():
            shutil.rmtree(check)
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(check), sha], cwd=repo, check=True,
                       capture_output=True)
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=check,
                           capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        if r.returncode != 0:
            red.append(sha)
        subprocess.run(["git", "worktree", "remove", "--force", str(check)], cwd=repo, capture_output=True)
    report = {
        "kills": kills, "runs": runs, "seconds": round(time.time() - started, 1),
        "final_exit": final.returncode, "tasks": a.tasks, "by_status": by_status,
        "lost": len(lost), "duplicated_merges": duplicated,
        "infra_failures_counted": infra, "failed_for_infrastructure": infra_failed,
        "interrupted_attempts": interrupted, "counted_attempts": counted,
        "main_commits_checked": len(git(repo, "rev-list", "--first-parent", "main").split()),
        "red_commits_on_main": len(red),
        "kills_with_processes_left_after_1s": len(left_after_kill),
        "max_processes_left_after_1s": max((len(x) for x in left_after_kill), default=0),
        "examples_left": left_after_kill[:2],
        "orch_cgroups_left": [str(p) for p in orch_cgroups()],
        "dir": str(root),
    }
    print(json.dumps(report, indent=2))
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    ok = (not lost and not duplicated and not red and not left_after_kill and not infra_failed)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
