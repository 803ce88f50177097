"""An embedded moto server on loopback: all of sqsjobs' AWS, locally, over real HTTP.

Only `sqsjobs local`, the demo and the end-to-end tests import this; moto is a
development dependency and never loaded by workers or Lambda handlers.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from typing import Any

LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalAws:
    """moto's server in a thread of this process. `env` holds what a client needs to reach it."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:  # pragma: no cover - depends on the install
            from .errors import ConfigurationError

            raise ConfigurationError("the local AWS needs moto: pip install 'sqsjobs[local]'") from exc
        # werkzeug logs every request at INFO; that is noise next to a worker's job log.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.host = host
        self.port = port or free_port(host)
        self._server: Any = ThreadedMotoServer(ip_address=host, port=self.port, verbose=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def start(self, timeout: float = 30) -> LocalAws:
        """Start serving; a busy port (or a server that never comes up) is a ConfigurationError, never a hang."""
        from .errors import ConfigurationError

        self._check_port()
        # moto's start() waits for a "ready" event that a failed bind never sets: wait here, bounded.
        starter = threading.Thread(target=self._server.start, daemon=True, name="sqsjobs-local-start")
        starter.start()
        starter.join(timeout)
        if starter.is_alive():
            raise ConfigurationError(
                f"the local AWS did not start on {self.host}:{self.port} within {timeout:.0f} s; "
                "is the port in use? pass another --port"
            )
        return self

    def _check_port(self) -> None:
        from .errors import ConfigurationError

        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
            try:
                sock.bind((self.host, self.port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigurationError(
                        f"port {self.port} on {self.host} is already in use (another `sqsjobs local`?); "
                        "stop that process or pass another --port"
                    ) from None
                raise ConfigurationError(f"cannot listen on {self.host}:{self.port} ({exc.strerror})") from None

    def stop(self) -> None:
        self._server.stop()

    def export(self) -> None:
        """Point this process (and the children it starts) at the local server."""
        os.environ.update(self.env)
        from . import aws

        aws.reset_clients()

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
