"""Joining or starting a Ray cluster, shared by every Ray path (sharded index search and build,
sharded embedding): the import with its install hint, ``connect``, the GPUs an actor or task
asks for, and unwrapping the library's own errors from Ray's.

Ray is optional: ``pip install 'xretrieve[distributed]'``.
"""

from __future__ import annotations

from xretrieve.errors import XRetrieveError

INSTALL_HINT = "pip install 'xretrieve[distributed]' (or: pip install ray)"


def ray_module():
    """The ``ray`` module, or ``XRetrieveError`` with the install command when it is missing."""
    try:
        import ray
    except ImportError:
        raise XRetrieveError(f"--ray needs the 'ray' package: {INSTALL_HINT}") from None
    return ray


def connect(address: str) -> bool:
    """Join (``auto``: the running cluster; an address: that one) or start (``local``) a Ray
    cluster; True when this call started it. An already initialised Ray is reused."""
    ray = ray_module()
    if ray.is_initialized():
        return False
    try:
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        text = str(error).strip().splitlines()
        raise XRetrieveError(
            f"cannot reach a Ray cluster at {address!r}: {text[0] if text else error} "
            "(use --ray local to start one on this machine)"
        ) from None
    return True


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
