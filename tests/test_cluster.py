"""`nasq search nb201 --address` on a real two-node Ray cluster, the loss of a node mid-search, and a
later `nasq resume` of that search that must count the lost trial once.

The cluster (``ray.cluster_utils.Cluster``: a head and one worker node, one CPU each) lives in a
helper process, so it never meets the session Ray of the other tests; this module is that
helper when run as a script. The helper drives two searches through the CLI, each in its own
process joining the cluster with ``--address``, and prints one JSON document the tests check.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

# The real `nasq` command, run in a child process with this interpreter.
CLI = "import sys; from nasq.cli.main import main; sys.exit(main(sys.argv[1:]))"
SPREAD_SAMPLES = 4
LOSS_SAMPLES = 6
# slow cells (each sleeps >= 0.75 x --sim-time) that the searches evaluate first
_C3, _C1 = "nor_conv_3x3", "nor_conv_1x1"
SLOW_POINTS = tuple(f"|{a}~0|+|{b}~0|{_C3}~1|+|{_C3}~0|{_C3}~1|{_C3}~2|"
               for a, b in ((_C3, _C3), (_C1, _C3), (_C3, _C1), (_C1, _C1)))


def _search(address: str, table: str, storage: str, name: str, samples: int, sim: float,
            points: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-c", CLI, "search", "nb201", "--address", address, "--table", table,
            "--storage", storage, "--name", name, "--samples", str(samples), "--concurrency", "2",
            "--population", "4", "--sample-size", "2", "--sim-time", str(sim), "--seed", "3",
            *(f"--points={genome}" for genome in points)]


def _completions(run_dir: Path) -> int:
    path = run_dir / "completions.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _helper(table: str, storage: str) -> dict:
    """Start the cluster, run both searches against it, return what the tests check."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        out: dict = {"head": cluster.head_node.node_id, "worker": worker.node_id}
        # two slow cells first: the second trial's actor has time to start on the other node
        spread = subprocess.run(_search(cluster.address, table, storage, "spread", SPREAD_SAMPLES, 2.0,
                                        SLOW_POINTS[:2]), capture_output=True, text=True, timeout=150)
        out["spread"] = {"rc": spread.returncode, "stdout": spread.stdout, "stderr": spread.stderr[-3000:],
                         "cluster_alive": cluster.head_node.remaining_processes_alive()
                         and worker.remaining_processes_alive()}
        run_dir = Path(storage) / "loss"
        log = Path(storage) / "loss.log"
        with open(log, "w") as f:
            proc = subprocess.Popen(_search(cluster.address, table, storage, "loss", LOSS_SAMPLES, 2.5,
                                            SLOW_POINTS), stdout=f, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 120
            while _completions(run_dir) < 2 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # the third and fourth slow cells (>2 s each) are running now
            out["completed_before_loss"] = _completions(run_dir)
            out["lost_at"] = time.time()
            cluster.remove_node(worker)
            try:
                rc = proc.wait(timeout=150)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        out["loss"] = {"rc": rc, "log": log.read_text()[-3000:]}
        if (run_dir / "trials.csv").exists():
            shutil.copy(run_dir / "trials.csv", Path(storage) / "loss-before-resume.csv")
        # a later `nasq resume` (same cluster, head node only): Tune's snapshot may still hold the trial
        # lost with its node as RUNNING; it must not run again and count twice
        again = subprocess.run([sys.executable, "-c", CLI, "resume", str(run_dir)], capture_output=True,
                               text=True, timeout=150)
        out["resume"] = {"rc": again.returncode, "stdout": again.stdout[-3000:],
                         "stderr": again.stderr[-3000:]}
        out["lost"] = _doctored_resume(cluster.address, table, storage)
        return out
    finally:
        cluster.shutdown()


def _doctored_resume(address: str, table: str, storage: str) -> dict:
    """A small search on the cluster, its state doctored as a node loss can leave it, then a resume."""
    first = subprocess.run(_search(address, table, storage, "lost", 4, 0.0), capture_output=True, text=True,
                           timeout=150)
    out: dict = {"first": {"rc": first.returncode, "log": first.stdout[-3000:] + first.stderr[-3000:]}}
    if first.returncode != 0:
        return out
    run_dir = Path(storage) / "lost"
    snapshot = sorted(run_dir.glob("experiment_state-*.json"))[-1]
    doc = json.loads(snapshot.read_text())
    state = json.loads(doc["trial_data"][0][0])
    lost = state["trial_id"]
    state["status"] = "RUNNING"  # as Tune left the trial on the lost node
    doc["trial_data"][0][0] = json.dumps(state)
    snapshot.write_text(json.dumps(doc))
    log = run_dir / "completions.jsonl"
    lines = [x for x in log.read_text().splitlines() if json.loads(x)["trial_id"] != lost]
    lines.append(json.dumps({"trial_id": lost, "status": "ERROR", "time": 1.0}))
    log.write_text("\n".join(lines) + "\n")
    out.update(lost_trial=lost, log_before=log.read_text())
    again = subprocess.run([sys.executable, "-c", CLI, "resume", str(run_dir), "--address", address],
                           capture_output=True, text=True, timeout=150)
    out["again"] = {"rc": again.returncode, "log": again.stdout[-3000:] + again.stderr[-3000:]}
    return out


def _kill_processes_naming(marker: str) -> None:
    """SIGKILL the processes whose command line names ``marker`` (a failed start's leftovers)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                    os.kill(int(entry), signal.SIGKILL)
            except OSError:
                continue
    time.sleep(1.0)


@pytest.fixture(scope="module")
def cluster_runs(tmp_path_factory, nb201_table) -> tuple[dict, Path]:
    """Run the helper once for the module; return its JSON and the storage folder.

    The helper gets a private ``RAY_TMPDIR``: a ``Cluster`` writes its address into
    ``$RAY_TMPDIR/ray/ray_current_cluster``, which every plain ``ray.init()`` on the machine
    would otherwise join.
    """
    storage = tmp_path_factory.mktemp("cluster")
    ray_tmp = tempfile.mkdtemp(prefix="nasq-ray-", dir="/tmp")  # short: Ray's socket paths live in it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "NASQ_RAY"))}
    try:
        for _ in range(2):  # Ray gives a raylet 30 s to register: a loaded 2-core machine can miss that once
            helper = [sys.executable, __file__, str(nb201_table), str(storage)]
            proc = subprocess.run(helper, capture_output=True, text=True, timeout=560,
                                  env={**env, "RAY_TMPDIR": ray_tmp})
            if proc.returncode == 0 or "timed out during startup" not in proc.stderr:
                break
            _kill_processes_naming(ray_tmp)
            storage = tmp_path_factory.mktemp("cluster")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        time.sleep(1.0)
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert not [line for line in ps.splitlines() if ray_tmp in line]  # the cluster is gone
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return json.loads(proc.stdout.strip().splitlines()[-1]), storage


def _trials(run_dir: Path):
    import pandas as pd

    return pd.read_csv(run_dir / "trials.csv")


def _counters(run_dir: Path) -> dict:
    state = sorted(run_dir.glob("nasq-searcher-state-*.json"))[-1]
    return json.loads(state.read_text())["strategy"]


def test_search_joins_the_cluster_and_uses_both_nodes(cluster_runs):
    out, storage = cluster_runs
    spread = out["spread"]
    assert spread["rc"] == 0, spread["stdout"][-3000:] + spread["stderr"]
    assert "best genome" in spread["stdout"]
    trials = _trials(storage / "spread")
    assert len(trials) == SPREAD_SAMPLES and trials["trial_id"].is_unique
    assert (trials["status"] == "TERMINATED").all() and trials["val_acc"].notna().all()
    # every trial ran on a node of the joined cluster (a fresh local Ray has other node ids), on both
    assert set(trials["node_id"]) == {out["head"], out["worker"]}
    state = _counters(storage / "spread")
    counters = {k: state["counters"][k] for k in ("births", "proposed", "failed")}
    assert counters == {"births": SPREAD_SAMPLES, "proposed": SPREAD_SAMPLES, "failed": 0}
    assert state["pending"] == {}
    # the driver left the cluster it joined running
    assert spread["cluster_alive"]


def test_losing_a_node_mid_search_loses_no_trial(cluster_runs):
    out, storage = cluster_runs
    loss = out["loss"]
    assert loss["rc"] == 0, loss["log"]
    assert out["completed_before_loss"] >= 2  # the node went away mid-search, not before it
    run_dir = storage / "loss"
    trials = _trials(run_dir)
    assert len(trials) == LOSS_SAMPLES and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"TERMINATED", "ERROR"}
    errored = int((trials["status"] == "ERROR").sum())
    assert errored >= 1  # the trial running on the lost node failed ...
    finished = trials[trials["status"] == "TERMINATED"]
    assert finished["val_acc"].notna().all()
    # ... and the trials that finished well after the loss ran on the head node
    later = finished[finished["completed_at"] > out["lost_at"] + 2.0]
    assert len(later) >= 1 and set(later["node_id"]) == {out["head"]}
    state = _counters(run_dir)
    # every trial counted once: errored ones as failed individuals, the rest as births
    counters = {k: state["counters"][k] for k in ("births", "proposed", "failed")}
    assert counters == {"births": LOSS_SAMPLES - errored, "proposed": LOSS_SAMPLES, "failed": errored}
    assert state["pending"] == {}
    # the population holds only finished trials, with their scores (a failed trial is never a member)
    acc = dict(zip(finished["genome"], finished["val_acc"]))
    for ind in state["population"]:
        assert acc[ind["genome"]] == pytest.approx(ind["score"])


def test_unreachable_address_is_a_one_line_error(tmp_path, nb201_table):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "NASQ_"))}
    proc = subprocess.run(_search("127.0.0.1:1", str(nb201_table), str(tmp_path), "none", 4, 0.0), env=env,
                          capture_output=True, text=True, timeout=120)  # Ray alone retries for minutes
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr[-3000:]
    assert "127.0.0.1:1" in err[0] and "--address" in err[0]
    assert not (tmp_path / "none").exists()


def test_resume_after_the_loss_counts_the_lost_trial_once(cluster_runs):
    import pandas as pd

    out, storage = cluster_runs
    again = out["resume"]
    assert again["rc"] == 0, again["stdout"] + again["stderr"]
    run_dir = storage / "loss"
    before = pd.read_csv(storage / "loss-before-resume.csv")
    after = _trials(run_dir)
    errored = set(before.loc[before["status"] == "ERROR", "trial_id"])
    assert errored  # the trial lost with its node ...
    # ... is still one errored trial after the resume: not run again, not counted a second time
    assert len(after) == LOSS_SAMPLES and after["trial_id"].is_unique
    assert set(after.loc[after["status"] == "ERROR", "trial_id"]) == errored
    assert dict(zip(after["trial_id"], after["status"])) == dict(zip(before["trial_id"], before["status"]))
    lines = (run_dir / "completions.jsonl").read_text().splitlines()
    assert len(lines) == LOSS_SAMPLES and len({json.loads(x)["trial_id"] for x in lines}) == LOSS_SAMPLES
    state = _counters(run_dir)
    assert state["counters"]["failed"] == len(errored) and state["pending"] == {}
    assert state["counters"]["births"] == LOSS_SAMPLES - len(errored)
    # Tune's snapshot now agrees: no trial is left unfinished for a third resume to run
    snapshot = json.loads(sorted(run_dir.glob("experiment_state-*.json"))[-1].read_text())
    statuses = {json.loads(t[0])["trial_id"]: json.loads(t[0])["status"] for t in snapshot["trial_data"]}
    assert statuses == dict(zip(after["trial_id"], after["status"]))


def test_resume_keeps_a_trial_lost_with_its_node_errored(cluster_runs):
    """The on-disk state a node loss can leave (seen in the loss search above, not in every run): Tune's
    snapshot holds the lost trial as RUNNING while the driver's completion log says ERROR. A resume must
    keep it errored instead of running it again (which would count its genome twice). Run on the module's
    cluster (the helper doctors the state between the search and the resume) to spare two Ray starts."""
    out, storage = cluster_runs
    case = out["lost"]
    assert case["first"]["rc"] == 0, case["first"]["log"]
    assert case["again"]["rc"] == 0, case["again"]["log"]
    run_dir, lost = storage / "lost", case["lost_trial"]
    trials = _trials(run_dir)
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert trials.loc[trials["trial_id"] == lost, "status"].tolist() == ["ERROR"]  # not run again
    assert (run_dir / "completions.jsonl").read_text() == case["log_before"]  # no second completion
    statuses = {json.loads(t[0])["trial_id"]: json.loads(t[0])["status"]
                for t in json.loads(sorted(run_dir.glob("experiment_state-*.json"))[-1].read_text())
                ["trial_data"]}
    assert statuses[lost] == "ERROR"


if __name__ == "__main__":  # the helper process of the `cluster_runs` fixture
    print(json.dumps(_helper(sys.argv[1], sys.argv[2])), flush=True)
