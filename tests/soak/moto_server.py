"""moto's server for the soak: DynamoDB requests answered one at a time, as DynamoDB's own atomicity
would have them.

    python -m tests.soak.moto_server [--port 5123] [--no-ddb-lock]

Without `--port` it binds a port the system picks and names it in its first line (`ready http://...`):
a port picked beforehand and bound later may be taken meanwhile by another test process's server.

moto's DynamoDB is not thread-safe (docs/testing.md): two conditional writes can both pass, and a
`TransactWriteItems` whose condition fails rolls back by putting back a deep copy of the *whole
table* taken when it began, erasing what other requests wrote in between (a batch's `finished_at`,
another member's count, a "sent" mark) or failing with a 500 when the copy races a writer. Real
DynamoDB serialises writes per item and makes a transaction atomic, so the soak serialises every
DynamoDB request (one lock; SQS and S3 stay concurrent, long polls included). `--no-ddb-lock` shows
what moto alone does. Request lines are not logged (werkzeug at ERROR): they cost the server CPU.

With the lock, a transaction's rollback needs only the items it touches: `_item_rollback` copies
those instead of the whole table. moto's whole-table copy per `TransactWriteItems` costs time and
memory in proportion to the table, which a 10,000-job soak grows to tens of thousands of items
(the server grew by ~20 MB/s and slowed down with it).
"""

from __future__ import annotations

import argparse
import copy
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class SerialDynamoDb:
    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with self._lock:
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)


def _item_rollback() -> None:
    """TransactWriteItems that snapshots (and on failure restores) only the items it touches.

    Valid only while DynamoDB requests are serialised (SerialDynamoDb): nothing else writes meanwhile.
    """
    from moto.dynamodb import models
    from moto.dynamodb.models.dynamo_type import DynamoType

    original = models.DynamoDBBackend.transact_write_items

    class _NoTableCopy:
        """Stands in for the `copy` module inside moto.dynamodb.models: tables are not copied."""

        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, models.Table) else copy.deepcopy(value, memo)

    models.copy = _NoTableCopy()  # type: ignore[assignment]

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = []
        for entry in transact_items:
            op_type, op = next(iter(entry.items()))
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue
            attrs = op["Item"] if op_type == "Put" else op["Key"]
            hash_key = DynamoType(attrs[table.hash_key_attr])
            range_key = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
            before = table.get_item(hash_key, range_key)
            saved.append((table, hash_key, range_key, copy.deepcopy(before)))
        try:
            original(self, transact_items)
        except Exception:
            for table, hash_key, range_key, before in reversed(saved):
                if before is None:
                    table.delete_item(hash_key, range_key)
                elif range_key is not None:
                    table.items.setdefault(hash_key, {})[range_key] = before
                else:
                    table.items[hash_key] = before
            raise

    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (the default): a free port, named in the ready line")
    parser.add_argument("--no-ddb-lock", action="store_true", help="let moto answer DynamoDB concurrently")
    args = parser.parse_args(argv)

    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app: WsgiApp = DomainDispatcherApplication(create_backend_app)
    if not args.no_ddb_lock:
        _item_rollback()
        app = SerialDynamoDb(app)
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    print(f"ready http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()  # until the parent terminates it


if __name__ == "__main__":
    main()
