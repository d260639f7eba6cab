"""Joining or starting a Ray cluster, shared by every Ray path (sharded index search and build,
sharded embedding, mining on indexes): the import with its install hint, ``connect``, the GPUs
an actor or task asks for, and unwrapping the library's own errors from Ray's.

``connect`` checks that something answers at the cluster's address before ``ray.init``, which
retries an unreachable address for minutes, and keeps the project's SIGTERM handler in place
(``ray.init`` installs its own, which exits without clean-up), so that every Ray command exits
with 143 after cleaning up, as the others do.

Ray is optional: ``pip install 'xretrieve[distributed]'``.
"""

from __future__ import annotations

import contextlib
import os
import socket

from xretrieve.core.errors import ArgumentError, XRetrieveError
from xretrieve.core.interrupts import keep_sigterm_handler

INSTALL_HINT = "pip install 'xretrieve[distributed]' (or: pip install ray)"
# Seconds to wait for a TCP connection to a cluster's address before giving up on it.
CONNECT_TIMEOUT_S = 10.0
_RAY_CLIENT_PORT = 10001


def ray_module():
    """The ``ray`` module, or ``ArgumentError`` (about the ``ray`` argument of the caller) with
    the install command when it is missing."""
    try:
        import ray
    except ImportError:
        raise ArgumentError("ray", f"{{ray}} needs the 'ray' package: {INSTALL_HINT}") from None
    return ray


def connect(address: str) -> bool:
    """Join (``auto``: the running cluster; an address: that one) or start (``local``) a Ray
    cluster; True when this call started it. An already initialised Ray is reused. A cluster
    that cannot be reached is an ``ArgumentError`` (naming ``ray``, the caller's argument)
    within about ``CONNECT_TIMEOUT_S``."""
    ray = ray_module()
    if ray.is_initialized():
        return False
    try:
        with keep_sigterm_handler():
            if address == "local":
                ray.init(include_dashboard=False, log_to_driver=False)
            else:
                _check_reachable(_endpoint(address))
                ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        text = str(error).strip().splitlines()
        raise ArgumentError(
            "ray",
            f"cannot reach a Ray cluster at {address!r}: {text[0] if text else error} "
            "(use {ray='local'} to start one on this machine)",
        ) from None
    return True


def _endpoint(address: str) -> tuple[str, int] | None:
    """The host and port ``ray.init(address=...)`` would connect to: ``ray://host[:port]`` (Ray
    Client), ``host:port`` (the head's GCS), or for ``auto`` $RAY_ADDRESS or the cluster Ray
    finds (the last ``ray start``, one running here; none is a ``ConnectionError``). None when
    it cannot be told, and Ray is left to judge the address."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or _found_address() or ""
    client = address.startswith("ray://")
    host, colon, port = address.removeprefix("ray://").partition("/")[0].rpartition(":")
    if not colon:
        host, port = (port, str(_RAY_CLIENT_PORT)) if client else ("", "")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _found_address() -> str | None:
    """The ``host:port`` of the cluster ``ray.init(address="auto")`` joins, found as Ray finds
    it (no public API does this); None when that cannot be asked."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:
        return None
    try:
        return canonicalize_bootstrap_address("auto")
    except ConnectionError:
        raise ConnectionError(
            "no running cluster found (none started here with 'ray start', RAY_ADDRESS not set)"
        ) from None
    except (TypeError, ValueError):
        return None


def _check_reachable(endpoint: tuple[str, int] | None) -> None:
    """``ConnectionError`` when nothing accepts a TCP connection at ``endpoint``."""
    if endpoint is None:
        return
    try:
        with contextlib.closing(socket.create_connection(endpoint, timeout=CONNECT_TIMEOUT_S)):
            pass
    except OSError as error:
        host, port = endpoint
        reason = error.strerror or str(error) or type(error).__name__
        raise ConnectionError(f"nothing answers at {host}:{port} ({reason})") from None


def gpus_per_worker() -> int:
    """1 when the cluster has a GPU (each actor or task then takes one), else 0."""
    return 1 if ray_module().cluster_resources().get("GPU", 0) >= 1 else 0


def get_result(future, actor: str = "an actor", max_restarts: int = 0):
    """``ray.get(future)``, re-raising an ``XRetrieveError`` raised remotely as itself, and an
    ``actor`` that stayed dead after its ``max_restarts`` as an ``XRetrieveError``."""
    ray = ray_module()
    try:
        return ray.get(future)
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, XRetrieveError):
            raise error.cause from None
        raise
    except ray.exceptions.RayActorError as error:
        raise XRetrieveError(f"{actor} died more than {max_restarts} times: {error}") from None
