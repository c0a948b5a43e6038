"""Dask set up in one place: a ``LocalCluster`` on this machine or a client of an existing scheduler.

Every stage that scales out with Dask (trigger scoring, design-space scans) opens its client with
:func:`dask_client`, so the workers look the same everywhere (processes, one thread each by
default, quiet logs) and a wrong scheduler address fails fast with an actionable one-line
:class:`~trigger_ml.core.errors.TriggerMLError` instead of a long timeout and a traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from trigger_ml.core.errors import TriggerMLError

__all__ = ["LOCAL", "dask_client"]

#: the ``scheduler`` value that starts a LocalCluster (``None`` does too)
LOCAL = "local"


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = LOCAL,
    *,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    env: Mapping[str, str] | None = None,
    memory_limit: str | float | None = "auto",
    timeout_s: float = 10.0,
    silence_logs: int = logging.ERROR,
) -> Iterator[Any]:
    """A ``dask.distributed.Client``, closed (with its LocalCluster, if any) on exit.

    ``scheduler``: ``None`` or ``"local"`` starts a LocalCluster of ``n_workers`` worker processes
    with ``threads_per_worker`` threads each (defaults: 2 x 1, for a 2-core machine), no dashboard,
    logs below ``silence_logs`` silenced, ``env`` set in the workers and ``memory_limit`` per worker
    (Dask's ``"auto"``: the machine's memory shared among the workers; 0: no limit). Spawned worker
    processes need the usual ``if __name__ == "__main__":`` guard in scripts.

    Any other string is the address of a running scheduler (``tcp://host:8786``; the workers must
    see the data files under the same paths). If it cannot be reached within ``timeout_s`` seconds
    (also the client's reconnect window afterwards), or is not an address at all, a one-line
    :class:`TriggerMLError` names it and the fix.
    """
    from dask.distributed import Client, LocalCluster

    cluster = None
    if scheduler is None or str(scheduler).strip() == LOCAL:
        kw: dict[str, Any] = {}
        if env is not None:
            kw["env"] = dict(env)
        cluster = LocalCluster(n_workers=int(n_workers), threads_per_worker=int(threads_per_worker), processes=True,
                               dashboard_address=None, memory_limit=memory_limit, silence_logs=silence_logs, **kw)
        try:
            client = Client(cluster)
        except BaseException:
            cluster.close()
            raise
    else:
        address = str(scheduler).strip()
        _probe(address, min(timeout_s, 3.0))
        try:
            client = Client(address, timeout=timeout_s)
        except ValueError as exc:  # e.g. an unknown address scheme
            raise TriggerMLError(
                f"{address!r} is not a Dask scheduler address ({_first_line(exc)}): give tcp://host:8786 of a running "
                f"`dask scheduler`, or 'local' (or drop --scheduler) to run on this machine") from None
        except (OSError, TimeoutError) as exc:
            raise TriggerMLError(
                f"cannot reach the Dask scheduler at {address} within {timeout_s:g} s ({_first_line(exc)}): "
                f"start `dask scheduler` there (and `dask worker {address}` on the worker machines) "
                f"or drop --scheduler") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _probe(address: str, timeout_s: float) -> None:
    """A plain TCP connect to a ``tcp://host:port`` address before Dask's client retries for its
    whole timeout: nothing listening (refused, unknown host, no route) fails at once, in one line."""
    import socket
    from urllib.parse import urlsplit

    if not address.startswith("tcp://"):
        return  # other schemes (tls://, inproc://, ...) are left to Dask
    try:
        u = urlsplit(address)
        host, port = u.hostname, u.port
    except ValueError:
        host = port = None
    if not host or port is None:
        raise TriggerMLError(f"{address!r} is not a Dask scheduler address (expected tcp://host:port): give tcp://host:8786 "
                             f"of a running `dask scheduler`, or 'local' (or drop --scheduler) to run on this machine")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise TriggerMLError(
            f"cannot reach the Dask scheduler at {address} ({_first_line(exc)}): start `dask scheduler` there "
            f"(and `dask worker {address}` on the worker machines) or drop --scheduler") from None


def _first_line(exc: BaseException) -> str:
    msg = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
