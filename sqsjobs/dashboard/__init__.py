"""`sqsjobs dashboard`: a small web app over the same operations as the CLI (docs/dashboard.md).

`create_app(app, token=...)` (sqsjobs.dashboard.app) returns the Starlette application; the CLI serves it
with uvicorn. It needs the `dashboard` extra (Starlette, Jinja2, uvicorn); nothing else in sqsjobs
imports this package, so workers and the Lambda handler never load it.
"""
