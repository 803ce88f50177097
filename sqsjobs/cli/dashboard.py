"""`sqsjobs dashboard`: serve the web dashboard (sqsjobs.dashboard) with uvicorn until Ctrl-C.

Everything that can be wrong is found before it listens, as one error line: the settings, the jobs
module, AWS (one read of the table, so missing credentials or region stop here), the gate (anything but
loopback needs a token or basic auth) and the port.
"""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from .. import workers
from ..errors import ConfigurationError
from .common import AppOption, build_app, console

EXAMPLES = """[bold]Examples[/]

  sqsjobs dashboard -a myapp.jobs                    [dim]# http://127.0.0.1:8484, this machine only[/]
  SQSJOBS_DASHBOARD_TOKEN=... sqsjobs dashboard --host 0.0.0.0   [dim]# behind a load balancer[/]
"""


def dashboard(
    app: AppOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (loopback needs no login).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8484,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="The login token (SQSJOBS_DASHBOARD_TOKEN; at least 16 characters). Needed, or basic auth, "
            "when --host is not loopback.",
            show_default=False,
        ),
    ] = None,
    refresh: Annotated[
        float, typer.Option("--refresh", min=0, help="Seconds between the live pages' refreshes (0: never).")
    ] = 5.0,
) -> None:
    """Serve the web dashboard: queues, charts, workers, jobs, failed jobs, batches, schedules (docs/dashboard.md)."""
    try:
        import uvicorn

        from ..dashboard.app import create_app
    except ImportError as exc:
        raise ConfigurationError(
            f"the dashboard needs the `dashboard` extra ({exc.name} is missing): pip install 'sqsjobs[dashboard]'"
        ) from None
    if token is not None and len(token) < 16:
        raise ConfigurationError("--token must be at least 16 characters (e.g. `openssl rand -hex 24`)")
    application = build_app(app, dashboard_token=token)
    web = create_app(application, host=host, refresh=refresh)  # refuses a non-loopback host without a gate
    workers.read_controls(application.store)  # credentials, region and the table, checked before listening
    _port_free(host, port)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"sqsjobs dashboard on http://{shown}:{port}/ (Ctrl-C to stop)")
    uvicorn.run(web, host=host, port=port, log_level="warning", proxy_headers=True, server_header=False)


def _port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {host} port {port} ({exc.strerror or exc}); it is in use or not this machine's: "
                "choose another with --port or --host"
            ) from None
