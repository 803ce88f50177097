"""`sqsjobs dashboard`: serve the web dashboard (sqsjobs.dashboard) with uvicorn until Ctrl-C.

Everything that can be wrong is found before it listens, as one error line: the settings, the jobs
module, AWS (one read of the table, so missing credentials or region stop here), the gate (anything but
loopback needs a token or basic auth) and the port.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Annotated

import typer

from .. import workers
from ..errors import ConfigurationError
from .common import AppOption, build_app, console

if TYPE_CHECKING:
    from ..app import App

EXAMPLES = """[bold]Examples[/]

  sqsjobs dashboard -a myapp.jobs                    [dim]# http://127.0.0.1:8484, this machine only[/]
  export SQSJOBS_DASHBOARD_TOKEN=$(openssl rand -hex 24)   [dim]# not --token: a flag shows in `ps`[/]
  sqsjobs dashboard --host 0.0.0.0 --allowed-host dashboard.example.com   [dim]# behind a load balancer[/]
"""


def dashboard(
    app: AppOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (loopback needs no login).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8484,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="The login token (at least 16 characters). Needed, or basic auth, when --host is not "
            "loopback. Prefer SQSJOBS_DASHBOARD_TOKEN: a flag's value shows in `ps` to everyone on the machine.",
            show_default=False,
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="A host name browsers use for it besides loopback's and --host's (the load balancer's name; "
            "`*.example.com`); repeat for more. Other names get 400 (DNS rebinding). SQSJOBS_DASHBOARD_ALLOWED_HOSTS.",
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
    # Refuses a non-loopback host without a gate, and a host name that is not one.
    web = create_app(application, host=host, refresh=refresh, allowed_hosts=_allowed(application, allowed_host))
    workers.read_controls(application.store)  # credentials, region and the table, checked before listening
    _port_free(host, port)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"sqsjobs dashboard on http://{shown}:{port}/ (Ctrl-C to stop)")
    names = [name.strip() for name in _allowed(application, allowed_host) if name.strip()]
    if host in ("0.0.0.0", "::") and not names:
        console.print(
            "It answers only the Host names 127.0.0.1, localhost and [::1]: give the name browsers use with "
            "--allowed-host or SQSJOBS_DASHBOARD_ALLOWED_HOSTS."
        )
    uvicorn.run(web, host=host, port=port, log_level="warning", proxy_headers=True, server_header=False)


def _allowed(application: App, flags: list[str] | None) -> list[str]:
    """The flags' names and the setting's: a setting from the task definition plus one more from a flag."""
    return [*application.settings.dashboard_allowed_hosts.split(","), *(flags or [])]


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
