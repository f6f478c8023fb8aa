"""``nasq submit [--address URL] search …``: run a search on a running Ray cluster as a Ray Job.

The job goes through Ray's job submission API (``ray.job_submission.JobSubmissionClient``), so
it is listed on the dashboard's Jobs page with its logs. Its entrypoint is the same ``nasq``
command run by this Python on the cluster; inside the job ``RAY_ADDRESS`` is set, so the search
joins the cluster instead of starting a Ray. The token of Ray's token authentication (from
``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, as ``ray get-auth-token``
finds it) is sent with every request.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from nasq.errors import ConfigError

_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_VERBS = ("search", "resume")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``submit`` verb."""
    parser = sub.add_parser("submit", help="run `nasq search …` on a running Ray cluster as a Ray Job",
                            description="Send a search to a running Ray cluster through Ray's job submission "
                            "API; it appears on the dashboard's Jobs page with its logs. Example: "
                            "nasq submit "
                            "--address http://127.0.0.1:8265 search nb201 --table nb201.csv --samples 50")
    parser.add_argument("--address", default=None,
                        help="the cluster's dashboard URL, e.g. http://127.0.0.1:8265 (default: RAY_ADDRESS "
                        "or the cluster `ray start` left on this machine)")
    parser.add_argument("--working-dir", default=None, metavar="DIR",
                        help="ship DIR to the cluster and run there (runtime_env working_dir); "
                        "default: run in "
                        "this directory, which the cluster must see (same machine or a shared file system)")
    parser.add_argument("--follow", action="store_true", help="print the job's logs until it ends")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="search …",
                        help="the nasq command the job runs (`search …` or `resume …`)")
    parser.set_defaults(func=_run)


def auth_headers() -> dict[str, str]:
    """``Authorization: Bearer <token>`` when a Ray token is available (else no header)."""
    try:
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:  # pragma: no cover - a Ray without token authentication
        return {}
    loader = AuthenticationTokenLoader.instance()
    if not loader.has_token(ignore_auth_mode=True):
        return {}
    return {"Authorization": f"Bearer {loader.get_raw_token(ignore_auth_mode=True)}"}


def dashboard_help(url: str | None) -> str:
    """How to open the dashboard at ``url``: the token to paste when Ray's token auth is on."""
    if not url:
        return ""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled

        token = is_token_auth_enabled()
    except Exception:  # noqa: BLE001 - an older Ray: no token auth
        token = False
    if not token:
        return ""
    return ("nasq: the dashboard asks for a token: paste the output of `ray get-auth-token` (HTTP clients: "
            "header `Authorization: Bearer $(ray get-auth-token)`)")


def entrypoint(command: list[str], cwd: str | None) -> str:
    """Shell command the job runs: this Python's ``nasq`` with ``command``, in ``cwd`` if given."""
    line = shlex.join([sys.executable, "-m", "nasq.cli.main", *command])
    return f"cd {shlex.quote(cwd)} && {line}" if cwd else line


def _check_command(command: list[str]) -> list[str]:
    if command and command[0] == "--":
        command = command[1:]
    if not command or command[0] not in _VERBS:
        raise ConfigError("nasq submit needs the command to run, "
                          "e.g. `nasq submit search nb201 --table T.csv`")
    if "--address" in command or any(a.startswith("--address=") for a in command):
        raise ConfigError("leave --address out of the submitted command (the job joins its own cluster); "
                          "pass it to `nasq submit --address URL` instead")
    from nasq.cli.main import build_parser

    build_parser().parse_args(command)  # a bad flag fails here, with argparse's message, before submitting
    return command


def client(address: str | None) -> Any:
    """A ``JobSubmissionClient`` for ``address`` sending the Ray token; ``ConfigError`` if unreachable."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except Exception as exc:  # noqa: BLE001 - Ray raises several kinds here; the user gets one line
        raise _api_error("cannot reach the Ray job API", address, exc) from exc


def _api_error(what: str, address: str | None, exc: BaseException) -> ConfigError:
    """One line for a failed job API call: the token's fix for an auth refusal, else the address's."""
    reason = _first_line(exc)
    if "uthenticat" in reason or "401" in reason or "403" in reason:
        fix = ("the cluster uses token auth: put its token (`ray get-auth-token` on the head) in "
               "RAY_AUTH_TOKEN or ~/.ray/auth_token")
    else:
        fix = "start the cluster with `ray start --head` and pass its dashboard URL with --address"
    return ConfigError(f"{what} at {_where(address)} ({reason}); {fix}")


def _where(address: str | None) -> str:
    return address or os.environ.get("RAY_ADDRESS") or "this machine's cluster"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def submit(command: list[str], address: str | None = None, working_dir: str | None = None) -> tuple[str, Any]:
    """Submit ``nasq <command>`` as a Ray Job; return (submission id, client)."""
    command = _check_command(list(command))
    runtime_env = None
    if working_dir is not None:
        wd = Path(working_dir).expanduser().resolve()
        if not wd.is_dir():
            raise ConfigError(f"--working-dir {working_dir} is not a directory; pass the folder to ship")
        runtime_env = {"working_dir": str(wd)}
    jobs = client(address)
    line = entrypoint(command, None if runtime_env else os.getcwd())
    try:
        job_id = jobs.submit_job(entrypoint=line, runtime_env=runtime_env, entrypoint_num_cpus=0,
                                 metadata={"nasq": shlex.join(command)})
    except Exception as exc:  # noqa: BLE001 - e.g. 401/403 from token auth: one line naming the fix
        raise _api_error("the Ray job API refused the job", address, exc) from exc
    return job_id, jobs


def follow(jobs: Any, job_id: str, poll_s: float = 2.0) -> str:
    """Print the job's new log text until it ends; return its final status."""
    shown = 0
    while True:
        status = str(jobs.get_job_status(job_id))
        logs = jobs.get_job_logs(job_id)
        print(logs[shown:], end="", flush=True)
        shown = len(logs)
        if status.split(".")[-1] in _TERMINAL:
            return status.split(".")[-1]
        time.sleep(poll_s)


def _run(args: argparse.Namespace) -> int:
    job_id, jobs = submit(args.command, args.address, args.working_dir)
    where = getattr(jobs, "get_address", lambda: None)() or args.address or ""
    flag = f" --address {where}" if where else ""
    print(f"nasq: submitted Ray job {job_id}", flush=True)
    print(f"nasq: follow it with `ray job logs -f {job_id}{flag}`; status: `ray job status {job_id}{flag}`; "
          f"stop: `ray job stop {job_id}{flag}`", flush=True)
    if where:
        print(f"nasq: Jobs page: {where}/#/jobs", flush=True)
        hint = "nasq: the dashboard and `ray job …` need the cluster's token when it uses token auth: " \
               "`ray get-auth-token` prints it"
        print(hint, flush=True)
    if not args.follow:
        return 0
    status = follow(jobs, job_id)
    print(f"nasq: job {job_id} {status}", flush=True)
    return 0 if status == "SUCCEEDED" else 1
