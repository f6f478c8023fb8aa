"""Join a Ray cluster with token authentication the way ``ray start`` set it up.

``ray start --head`` turns Ray's token authentication on whenever a token exists (``RAY_AUTH_TOKEN``,
the file at ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``), but ``ray.init(address=...)`` sends the
token only with ``RAY_AUTH_MODE=token``, and a driver in token mode cannot start actors on a cluster
without authentication. So before joining, :func:`prepare_join` asks the cluster's GCS once, without a
token, whether it wants one (an unauthenticated ``GetClusterId`` is refused with ``UNAUTHENTICATED``),
checks the token it found the same way, and only then turns token mode on. Ray is imported lazily.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from nasq.errors import ConfigError

logger = logging.getLogger(__name__)

AUTH_MODE_ENV = "RAY_AUTH_MODE"
_TOKEN_FIX = ("put the cluster's token (`ray get-auth-token` on its head node) in RAY_AUTH_TOKEN or "
              "~/.ray/auth_token")


def find_token() -> tuple[str, str] | None:
    """The auth token Ray would use and where it came from, in Ray's order, or None.

    Order: the ``RAY_AUTH_TOKEN`` variable, the file named by ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``.
    """
    value = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if value:
        return value, "RAY_AUTH_TOKEN"
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    try:
        value = path.read_text(errors="replace").strip()
    except OSError:
        return None
    return (value, str(path)) if value else None


def _gcs_answers(address: str, token: str | None, timeout_s: float) -> bool | None:
    """Whether the GCS at ``host:port`` answers ``GetClusterId`` (False: refused for authentication;
    None: no answer, or Ray without token authentication)."""
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # pragma: no cover - Ray always ships both
        return None
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as exc:
            return False if exc.code() == grpc.StatusCode.UNAUTHENTICATED else None
    return True


def prepare_join(address: str, timeout_s: float = 5.0) -> str | None:
    """Turn token authentication on for joining ``address`` when the cluster requires it.

    Does nothing when ``RAY_AUTH_MODE`` is set (the user decided), for ``ray://`` and other non
    ``host:port`` addresses, and for clusters that answer without a token.

    Returns:
        Where the token came from when token mode was turned on, else None.

    Raises:
        ConfigError: the cluster requires a token and none was found, or it refused the one found.
    """
    if os.environ.get(AUTH_MODE_ENV) or "://" in address:
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    if _gcs_answers(address, None, timeout_s) is not False:
        return None
    found = find_token()
    if found is None:
        raise ConfigError(f"the Ray cluster at {address!r} uses token authentication and no token was "
                          f"found; {_TOKEN_FIX}")
    token, source = found
    if _gcs_answers(address, token, timeout_s) is False:
        raise ConfigError(f"the Ray cluster at {address!r} refused the token in {source}; {_TOKEN_FIX}")
    os.environ[AUTH_MODE_ENV] = "token"
    try:  # Ray caches its config: refresh it so this process sees token mode (as `ray start` does)
        from ray._raylet import Config

        Config.initialize("")
    except (ImportError, AttributeError):  # pragma: no cover - Ray without token authentication
        pass
    logger.info("joining %s with token authentication (token from %s)", address, source)
    return source
