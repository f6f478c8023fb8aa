"""`connect_ray(None)`: a local Ray whose dashboard listens on 127.0.0.1, and its fallback without one.

Each case starts its own Ray in a helper process (this module run as a script) with a private
``RAY_TMPDIR``, so it never meets the session Ray of the other tests, and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _ping() -> int:
    import ray

    return ray.get(ray.remote(lambda: 42).remote())


def _get(url: str, headers: dict, timeout: float = 20.0) -> tuple[int, str]:
    """HTTP GET on 127.0.0.1 only, retried while the server starts; (status, body)."""
    import urllib.error
    import urllib.request

    assert urlsplit(url).hostname == "127.0.0.1", url  # never reach beyond this machine
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _dashboard_case() -> dict:
    """A local Ray with its dashboard: its version API, then a small NB201 search on that same Ray and the
    dashboard's state API over HTTP (one Ray start for both)."""
    import ray

    from nasq import runner
    from nasq.cli.submit import auth_headers

    url = runner.connect_ray(None)
    out = {"url": url, "ping": _ping(), "ray_version": ray.__version__}
    assert url and urlsplit(url).hostname == "127.0.0.1", url
    # Ray's token auth (on by default for a new local Ray) guards the API; its client sends the token
    from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled

    headers = get_auth_headers_if_auth_enabled({})
    status, body = _get(f"{url}/api/version", headers)
    out["version"] = {"status": status, **(json.loads(body) if status == 200 else {})}
    out["anonymous_version_status"] = _get(f"{url}/api/version", {})[0] if headers else None
    settings = runner.SearchSettings("nb201", {"table": os.environ["NASQ_TEST_TABLE"], "sim_time": 0.3},
                                     searcher="aging", population_size=3, sample_size=2, samples=5,
                                     concurrency=2, seed=3, storage=os.environ["NASQ_TEST_STORAGE"],
                                     name="dash")
    run_dir = runner.run_search(settings, verbose=0)
    headers = auth_headers()  # the token `ray get-auth-token` prints, as a bearer token
    out.update({"run_dir": str(run_dir), "auth": [f"{k}: {v.split()[0]}" for k, v in headers.items()]})
    # Ray reports task events to its state store asynchronously (about once a second): poll until the
    # status actor's last task (the search's end) and one task per trial are listed, or give up after 30 s
    deadline = time.monotonic() + 30.0
    while True:
        for what in ("actors", "tasks"):
            status, body = _get(f"{url}/api/v0/{what}?detail=1&limit=10000", headers)
            out[what] = {"status": status, "rows": json.loads(body)["data"]["result"]["result"] if body else []}
        names = [t.get("name", "") for t in out["tasks"]["rows"]]
        if (sum(n.startswith("trial ") for n in names) >= settings.samples
                and any(n.startswith("search finished") for n in names)) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    out["anonymous_status"] = _get(f"{url}/api/v0/actors", {})[0]
    ray.shutdown()
    return out


def _fallback_case() -> dict:
    import ray

    from nasq.runner import connect_ray

    os.environ["NASQ_RAY_DASHBOARD"] = "0"
    out = {"off": {"url": connect_ray(None), "ping": _ping()}}
    ray.shutdown()
    del os.environ["NASQ_RAY_DASHBOARD"]
    # the dashboard cannot start: Ray's own check finds its packages missing (injected here)
    ray._private.utils.get_dashboard_dependency_error = lambda: "aiohttp hidden by the test"
    out["broken"] = {"url": connect_ray(None), "ping": _ping()}
    ray.shutdown()
    return out


def _run_case(case: str, **extra_env: str) -> tuple[dict, list[str]]:
    """Run ``case`` in a helper process; return its JSON and the Ray processes it left behind."""
    ray_tmp = tempfile.mkdtemp(prefix="nasq-ray-", dir="/tmp")  # short: Ray's socket paths live in it
    try:
        # a stale address file, as `ray start` leaves one: a local start must not try to join it
        (Path(ray_tmp) / "ray").mkdir()
        (Path(ray_tmp) / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "NASQ_RAY"))}
        env.update({"RAY_TMPDIR": ray_tmp, "NASQ_RAY_NUM_CPUS": "1", **extra_env})
        proc = subprocess.run([sys.executable, __file__, case], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        time.sleep(1.0)
        ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
        left = [line for line in ps.splitlines() if ray_tmp in line]
        return json.loads(proc.stdout.strip().splitlines()[-1]), left
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def dashboard_run(nb201_table, tmp_path_factory) -> tuple[dict, list[str]]:
    """One local Ray with its dashboard and a search on it, shared by the dashboard and state API tests."""
    return _run_case("dashboard", NASQ_TEST_TABLE=str(nb201_table),
                     NASQ_TEST_STORAGE=str(tmp_path_factory.mktemp("dash")), NASQ_RAY_NUM_CPUS="2")


def test_local_ray_serves_its_dashboard_on_localhost(dashboard_run):
    out, left = dashboard_run
    assert out["ping"] == 42
    parts = urlsplit(out["url"])
    assert parts.scheme == "http" and parts.hostname == "127.0.0.1" and parts.port
    assert out["version"]["status"] == 200 and out["version"]["ray_version"] == out["ray_version"]
    assert out["anonymous_version_status"] in (None, 401)  # with Ray's token auth on, no token no answer
    assert left == []


def test_without_a_dashboard_ray_still_starts():
    out, left = _run_case("fallback")
    assert out["off"] == {"url": None, "ping": 42}  # NASQ_RAY_DASHBOARD=0
    assert out["broken"] == {"url": None, "ping": 42}  # the dashboard failed to start: Ray without it
    assert left == []


def test_state_api_lists_the_trials_and_the_search_status(dashboard_run):
    import pandas as pd

    out, left = dashboard_run
    assert left == []
    assert out["auth"] == ["Authorization: Bearer"]  # Ray's token auth is on: the token went in the header
    assert out["anonymous_status"] == 401 and out["actors"]["status"] == 200 and out["tasks"]["status"] == 200
    trials = pd.read_csv(Path(out["run_dir"]) / "trials.csv")
    genome_of = dict(zip(trials["trial_id"], trials["genome"]))
    assert len(genome_of) == 5
    actors = out["actors"]["rows"]
    # the named status actor of the run, in namespace nasq, costing no CPU
    status = [a for a in actors if a.get("name") == "nasq-status-dash"]
    assert len(status) == 1 and status[0]["ray_namespace"] == "nasq", status
    assert status[0]["repr_name"].startswith("SearchStatus(dash: running")
    assert status[0]["required_resources"].get("CPU", 0) == 0
    # every trainable actor's repr names a trial of this run and that trial's genome
    reprs = [a["repr_name"] for a in actors if a["repr_name"].startswith("nb201_trainable(")]
    assert reprs, [a["repr_name"] for a in actors]
    for text in reprs:
        named = [t for t in genome_of if f"trial={t}," in text]
        assert len(named) == 1 and f"genome={genome_of[named[0]]}," in text, text
    # every trial is a task on the status actor, named with its id, outcome and score
    tasks = [t["name"] for t in out["tasks"]["rows"]]
    for trial_id, acc in zip(trials["trial_id"], trials["val_acc"]):
        assert any(name.startswith(f"trial {trial_id} done val_acc={acc:.4g}") for name in tasks), trial_id
    final = [name for name in tasks if name.startswith("search finished: dash: finished, 5/5 trials")]
    assert len(final) == 1, [n for n in tasks if "search" in n]


if __name__ == "__main__":  # the helper process of `_run_case`
    cases = {"dashboard": _dashboard_case, "fallback": _fallback_case}
    result = cases[sys.argv[1]]()
    print(json.dumps(result), flush=True)
