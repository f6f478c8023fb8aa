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
    import ray

    from nasq.runner import connect_ray

    url = connect_ray(None)
    out = {"url": url, "ping": _ping(), "ray_version": ray.__version__}
    if url and urlsplit(url).hostname == "127.0.0.1":
        # Ray's token auth (on by default for a new local Ray) guards the API; its client sends the token
        from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled

        headers = get_auth_headers_if_auth_enabled({})
        status, body = _get(f"{url}/api/version", headers)
        out["version"] = {"status": status, **(json.loads(body) if status == 200 else {})}
        out["anonymous_status"] = _get(f"{url}/api/version", {})[0] if headers else None
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


def _run_case(case: str) -> tuple[dict, list[str]]:
    """Run ``case`` in a helper process; return its JSON and the Ray processes it left behind."""
    ray_tmp = tempfile.mkdtemp(prefix="nasq-ray-", dir="/tmp")  # short: Ray's socket paths live in it
    try:
        # a stale address file, as `ray start` leaves one: a local start must not try to join it
        (Path(ray_tmp) / "ray").mkdir()
        (Path(ray_tmp) / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "NASQ_RAY"))}
        env.update(RAY_TMPDIR=ray_tmp, NASQ_RAY_NUM_CPUS="1")
        proc = subprocess.run([sys.executable, __file__, case], env=env, capture_output=True, text=True,
                              timeout=150)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        time.sleep(1.0)
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        left = [line for line in ps.splitlines() if ray_tmp in line]
        return json.loads(proc.stdout.strip().splitlines()[-1]), left
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_local_ray_serves_its_dashboard_on_localhost():
    out, left = _run_case("dashboard")
    assert out["ping"] == 42
    parts = urlsplit(out["url"])
    assert parts.scheme == "http" and parts.hostname == "127.0.0.1" and parts.port
    assert out["version"]["status"] == 200 and out["version"]["ray_version"] == out["ray_version"]
    assert out["anonymous_status"] in (None, 401)  # with Ray's token auth on, no token no answer
    assert left == []


def test_without_a_dashboard_ray_still_starts():
    out, left = _run_case("fallback")
    assert out["off"] == {"url": None, "ping": 42}  # NASQ_RAY_DASHBOARD=0
    assert out["broken"] == {"url": None, "ping": 42}  # the dashboard failed to start: Ray without it
    assert left == []


if __name__ == "__main__":  # the helper process of `_run_case`
    result = {"dashboard": _dashboard_case, "fallback": _fallback_case}[sys.argv[1]]()
    print(json.dumps(result), flush=True)
