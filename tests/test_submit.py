"""`nasq submit`: a search sent to a cluster started by `ray start --head` runs as a Ray Job.

The cluster lives in a private temp dir with its own HOME: `ray get-auth-token --generate` writes
a fresh token to that HOME's ``~/.ray/auth_token``, so `ray start` turns token auth on; `nasq
submit` must find the token there, as `ray get-auth-token` does, with no extra step. The test
stops only the processes of its cluster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from nasq.errors import ConfigError

CLI = "import sys; from nasq.cli.main import main; sys.exit(main(sys.argv[1:]))"
RAY = str(Path(sys.executable).with_name("ray"))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _cluster_pids(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (this test's cluster only)."""
    ps = subprocess.run(["ps", "-eww", "-o", "pid=,args="], capture_output=True, text=True).stdout
    rows = (line.strip().partition(" ") for line in ps.splitlines())
    return [int(pid) for pid, _, args in rows if marker in args and int(pid) != os.getpid()]


def _kill_cluster(marker: str) -> None:
    """Stop this test's cluster by process id: SIGTERM, then SIGKILL what is left after a grace period."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 1.0)):
        for pid in _cluster_pids(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while _cluster_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture
def ray_cluster():
    """A head node started with `ray start --head` (token auth, dashboard on 127.0.0.1)."""
    root = Path(tempfile.mkdtemp(prefix="nasq-sub-", dir="/tmp"))  # short: Ray's socket paths live in it
    home = root / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "NASQ_RAY"))}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
    gcs, dash, agent, agent_grpc, metrics, runtime_env = _free_ports(6)
    start = [RAY, "start", "--head", f"--port={gcs}", "--num-cpus=2", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
             f"--dashboard-agent-listen-port={agent}",
             f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
             f"--runtime-env-agent-port={runtime_env}", f"--temp-dir={root / 'ray'}", "--disable-usage-stats"]
    try:
        # the user's way: a token in ~/.ray/auth_token, then `ray start` turns token auth on by itself
        subprocess.run([RAY, "get-auth-token", "--generate"], env=env, capture_output=True, timeout=60,
                       check=True)
        assert (home / ".ray" / "auth_token").is_file()
        proc = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        yield {"env": env, "address": f"http://127.0.0.1:{dash}", "root": root,
               "token": (home / ".ray" / "auth_token").read_text().strip()}
    finally:
        _kill_cluster(str(root))
        left = _cluster_pids(str(root))
        shutil.rmtree(root, ignore_errors=True)
        assert left == [], "processes of the test's cluster survived"


def _state(address: str, token: str, what: str) -> list[dict]:
    import urllib.request

    request = urllib.request.Request(f"{address}/api/v0/{what}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())["data"]["result"]["result"]


@pytest.mark.slow
@pytest.mark.ray
def test_submitted_search_runs_as_a_ray_job(ray_cluster, nb201_table, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    address, env = ray_cluster["address"], ray_cluster["env"]
    tokenless = tmp_path / "tokenless"
    tokenless.mkdir()
    # the refused and the accepted submission start side by side (two CLI processes, one import wait)
    refused = subprocess.Popen([sys.executable, "-c", CLI, "submit", "--address", address, "search", "nb201",
                                "--table", str(nb201_table)], env={**env, "HOME": str(tokenless)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = subprocess.run(
        [sys.executable, "-c", CLI, "submit", "--address", address, "search", "nb201", "--table",
         str(nb201_table), "--searcher", "aging", "--population", "2", "--sample-size", "2", "--samples", "4",
         "--storage", str(tmp_path), "--name", "job"], env=env, capture_output=True, text=True, timeout=120)
    try:
        refused_err = refused.communicate(timeout=120)[1]
    finally:
        if refused.poll() is None:
            refused.kill()
    err = refused_err.strip().splitlines()
    assert refused.returncode == 2 and len(err) == 1 and "ray get-auth-token" in err[0], refused_err
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = re.search(r"submitted Ray job (\S+)", proc.stdout).group(1)
    assert f"ray job logs -f {job_id}" in proc.stdout and "ray get-auth-token" in proc.stdout

    jobs = JobSubmissionClient(address, headers={"Authorization": f"Bearer {ray_cluster['token']}"})
    deadline = time.monotonic() + 300
    while jobs.get_job_status(job_id) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.monotonic() < deadline, jobs.get_job_logs(job_id)[-3000:]
        time.sleep(0.5)
    logs = jobs.get_job_logs(job_id)
    assert jobs.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-3000:]
    info = jobs.get_job_info(job_id)
    assert "nasq.cli.main search nb201" in info.entrypoint  # the Jobs page shows the nasq command
    run_dir = tmp_path / "job"
    assert f"nasq: run directory: {run_dir}" in logs and "nasq: best genome:" in logs
    assert "Started a local Ray instance" not in logs  # the job joined the cluster it was sent to
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == 4 and trials["val_acc"].notna().all()
    nodes = {n["node_id"] for n in _state(address, ray_cluster["token"], "nodes")}
    assert set(trials["node_id"]) <= nodes  # the trials ran on the cluster's node


def test_submit_refuses_a_command_it_cannot_run(tmp_path):
    from nasq.cli.submit import submit

    with pytest.raises(ConfigError, match="needs the command to run"):
        submit(["train", "x"])
    with pytest.raises(ConfigError, match="leave --address out"):
        submit(["search", "nb201", "--address", "127.0.0.1:6379"])
    with pytest.raises(ConfigError, match="not a directory"):
        submit(["search", "nb201", "--table", "t.csv"], working_dir=str(tmp_path / "missing"))
