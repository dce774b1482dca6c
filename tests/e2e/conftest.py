"""The e2e modules' local stack: the whole system in this process, on free ports.

Each module starts one stack (``started_stack``) and drives it over HTTP. The app keeps its
settings and wiring per process, and moto its emulated AWS: a stack starts from neither an
earlier stack's nor a functional test's, and leaves neither to the next (the stack resets the
emulator itself; this resets the app's wiring and the environment it changed).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["free_port", "started_stack"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _forget_process_wiring() -> None:
    from chalicelib import bootstrap
    from chalicelib.settings import get_settings

    get_settings.cache_clear()
    bootstrap.install(None, None)


@contextmanager
def started_stack(**options: Any) -> Iterator[Any]:
    """A started ``LocalStack`` (its API on a free port), stopped and forgotten afterwards."""
    from infra.local.stack import LocalStack

    environ = dict(os.environ)
    for name in ("REFUNDS_AWS_ENDPOINT", "REFUNDS_CHANNEL_SIMULATOR_URL"):
        os.environ.pop(name, None)
    _forget_process_wiring()
    local = LocalStack(port=free_port(), **options)
    local.start()
    try:
        yield local
    finally:
        local.stop()
        os.environ.clear()
        os.environ.update(environ)
        _forget_process_wiring()
