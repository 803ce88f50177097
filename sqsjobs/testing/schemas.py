"""`assert_schemas_compatible`: `sqsjobs schema check` inside your own test suite.

    from sqsjobs.testing.schemas import assert_schemas_compatible

    def test_queued_jobs_still_run_after_this_change():
        assert_schemas_compatible("sqsjobs.schema.json", app="myapp.jobs")

The jobs come from `app`: a module name (imported, like `--app`), an `App` (its registry) or a
`Registry`; by default the modules SQSJOBS_APP names. A test session may define extra jobs of its own:
they are new jobs to the snapshot, listed as safe, never a failure.
"""

from __future__ import annotations

from pathlib import Path

from ..app import App
from ..registry import Registry
from ..schema_compat import Change, compare
from ..schemas import DEFAULT_FILE, load, snapshot


def schema_changes(path: str | Path = DEFAULT_FILE, app: str | App | Registry | None = None) -> list[Change]:
    """Every change from the snapshot at `path` to the jobs of `app`, breaking ones first."""
    return compare(load(path), snapshot(_registry(app)))


def assert_schemas_compatible(path: str | Path = DEFAULT_FILE, app: str | App | Registry | None = None) -> None:
    """Fail (AssertionError) when a change to the jobs would break messages written for the snapshot at
    `path`, naming each change and how to make it safe."""
    breaking = [c for c in schema_changes(path, app) if c.breaking]
    if breaking:
        lines = [f"- {c.job} {c.where or ''} {c.kind}: {c.detail}. To make it safe: {c.fix}" for c in breaking]
        raise AssertionError(f"{len(breaking)} change(s) would break messages written for {path}:\n" + "\n".join(lines))


def _registry(app: str | App | Registry | None) -> Registry:
    if isinstance(app, Registry):
        return app
    if isinstance(app, App):
        return app.registry
    application = App(connection="null", app=app) if app else App(connection="null")
    application.load_jobs()
    return application.registry
