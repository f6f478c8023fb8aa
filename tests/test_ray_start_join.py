"""`nasq search --address` joins a cluster started the way users start one: `ray start --head`.

`ray start` turns token authentication on whenever a token exists (here: ``$HOME/.ray/auth_token``),
while a plain ``ray.init(address=...)`` joins without one and is refused; nasq must find the token
(in ``~/.ray/auth_token`` or ``RAY_AUTH_TOKEN``) and join with no extra step. The cluster lives in a
private temp dir and ``$HOME``; teardown kills exactly its processes (``ray stop`` would stop every
Ray on the machine).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from nasq.ray_auth import _gcs_answers

pytestmark = [pytest.mark.slow, pytest.mark.ray]

CLI = "import sys; from nasq.cli.main import main; sys.exit(main(sys.argv[1:]))"
RAY = str(Path(sys.executable).with_name("ray"))
SAMPLES = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, list[str]]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                args = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            out[int(entry)] = (ppid, args)
    return out


def _cluster_pids(temp_dir: str, port: int) -> set[int]:
    """Processes of the cluster: those naming its temp dir or its GCS port, and their descendants."""
    procs = _processes()
    ours, pid = set(), os.getpid()
    while pid in procs and pid not in ours:  # never this test process or its parents
        ours.add(pid)
        pid = procs[pid][0]
    gcs = f":{port}"
    roots = {p for p, (_, args) in procs.items()
             if any(temp_dir in a or (a.startswith("--address=") and a.endswith(gcs)) for a in args)} - ours
    found, grew = set(roots), True
    while grew:
        children = {p for p, (pp, _) in procs.items() if pp in found} - found - ours
        found |= children
        grew = bool(children)
    return found


def _kill_cluster(temp_dir: str, port: int) -> None:
    for _ in range(3):
        pids = _cluster_pids(temp_dir, port)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.5)


@contextlib.contextmanager
def _ray_start(auth_mode: str | None):
    """`ray start --head` on a free port, a token in its private $HOME; its processes killed at the end.

    ``auth_mode`` None starts it as users do (token auth on, since a token exists); ``"disabled"`` opts out.
    """
    home = Path(tempfile.mkdtemp(prefix="nasq-home-"))
    temp_dir = tempfile.mkdtemp(prefix="nasq-rs-", dir="/tmp")  # short: Ray's socket paths live in it
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "NASQ_RAY"))}
    env["HOME"] = str(home)
    start_env = {**env, "RAY_AUTH_MODE": auth_mode} if auth_mode else env
    port = _free_port()
    try:
        for _ in range(2):  # a loaded 2-core machine can time out the raylet's start once
            start = subprocess.run([RAY, "start", "--head", "--port", str(port), "--num-cpus", "2",
                                    "--temp-dir", temp_dir, "--include-dashboard", "false",
                                    "--ray-client-server-port", str(_free_port()), "--disable-usage-stats"],
                                   env=start_env, capture_output=True, text=True, timeout=180)
            if start.returncode == 0:
                break
            _kill_cluster(temp_dir, port)
        assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
        node = next((Path(temp_dir) / "session_latest").glob("gcs_server_port_*")).name.rsplit("_", 1)[1]
        yield {"address": f"127.0.0.1:{port}", "env": env, "home": home, "node_id": node,
               "start_log": start.stdout + start.stderr}
    finally:
        _kill_cluster(temp_dir, port)
        leftover = _cluster_pids(temp_dir, port)
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
        assert not leftover, f"cluster processes left running: {sorted(leftover)}"


@pytest.fixture(scope="module")
def ray_start_cluster():
    """A cluster started as users start one: token authentication on."""
    with _ray_start(None) as cluster:
        yield cluster


def _command(cluster: dict, table: Path, storage: Path, name: str) -> list[str]:
    return [sys.executable, "-c", CLI, "search", "nb201", "--samples", str(SAMPLES), "--population", "2",
            "--sample-size", "2", "--address", cluster["address"], "--table", str(table),
            "--storage", str(storage), "--name", name]


def _search(cluster: dict, table: Path, storage: Path, name: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(_command(cluster, table, storage, name), env=env, capture_output=True, text=True,
                          timeout=300)


def _searches(cluster: dict, table: Path, storage: Path,
              runs: dict[str, dict]) -> dict[str, subprocess.CompletedProcess]:
    """Several searches (name -> env) against one cluster at once: each its own CLI process."""
    procs = {name: subprocess.Popen(_command(cluster, table, storage, name), env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name, env in runs.items()}
    done = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return done


def _check_run(cluster: dict, run_dir: Path, proc: subprocess.CompletedProcess) -> None:
    import pandas as pd

    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == SAMPLES and (trials["status"] == "TERMINATED").all()
    assert set(trials["node_id"]) == {cluster["node_id"]}  # ran on the `ray start` node, not a new Ray


def test_cluster_from_ray_start_requires_a_token(ray_start_cluster):
    assert "Token authentication is enabled" in ray_start_cluster["start_log"]
    assert _gcs_answers(ray_start_cluster["address"], None, 10.0) is False
    token = (ray_start_cluster["home"] / ".ray" / "auth_token").read_text()
    assert _gcs_answers(ray_start_cluster["address"], token, 10.0) is True


def test_search_joins_with_the_token_in_home_or_in_ray_auth_token(ray_start_cluster, nb201_table, tmp_path):
    # both ways to find the token, as two searches run side by side on the one cluster
    empty_home = tmp_path / "home"
    empty_home.mkdir()
    token = (ray_start_cluster["home"] / ".ray" / "auth_token").read_text()
    env_token = {**ray_start_cluster["env"], "HOME": str(empty_home), "RAY_AUTH_TOKEN": token}
    runs = _searches(ray_start_cluster, nb201_table, tmp_path,
                     {"home-token": ray_start_cluster["env"], "env-token": env_token})
    _check_run(ray_start_cluster, tmp_path / "home-token", runs["home-token"])
    _check_run(ray_start_cluster, tmp_path / "env-token", runs["env-token"])


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr[-3000:]
    return err[0]


def test_missing_or_wrong_token_is_one_line_naming_the_fix(ray_start_cluster, nb201_table, tmp_path):
    empty_home = tmp_path / "home"
    empty_home.mkdir()
    runs = _searches(ray_start_cluster, nb201_table, tmp_path, {
        "no-token": {**ray_start_cluster["env"], "HOME": str(empty_home)},
        "bad-token": {**ray_start_cluster["env"], "RAY_AUTH_TOKEN": "0" * 64}})
    line = _one_line_error(runs["no-token"])
    assert "token authentication" in line and "ray get-auth-token" in line and "RAY_AUTH_TOKEN" in line
    line = _one_line_error(runs["bad-token"])
    assert "refused the token in RAY_AUTH_TOKEN" in line and "ray get-auth-token" in line
    assert not (tmp_path / "no-token").exists() and not (tmp_path / "bad-token").exists()


def test_cluster_without_auth_is_joined_without_token_mode(nb201_table, tmp_path):
    # a token in $HOME must not switch the driver to token mode: such a driver cannot start actors there
    with _ray_start("disabled") as cluster:
        assert "Token authentication is enabled" not in cluster["start_log"]
        assert _gcs_answers(cluster["address"], None, 10.0) is True  # open: answers without a token
        proc = _search(cluster, nb201_table, tmp_path, "open", cluster["env"])
        _check_run(cluster, tmp_path / "open", proc)
