"""The store on DynamoDB: one table, `pk`/`sk`, TTL on `expires_at`, conditional writes only.

Each operation is one request in the common case (an `incr` that starts a new window
is two); expired-but-not-yet-deleted items are treated as absent in every condition.

"Expired" allows for clock skew: every condition and every read compares `expires_at` with
`:now`, which is this worker's clock *minus* `skew` — an item written by a worker whose clock is
behind ours stays live for as long as its writer meant it to (sqsjobs.stores.base).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from ..errors import SqsJobsError
from .base import Key

_serialize = TypeSerializer().serialize
_deserialize = TypeDeserializer().deserialize
_RESERVED = {"pk", "sk", "expires_at"}
_ABSENT_OR_EXPIRED = "attribute_not_exists(pk) OR expires_at <= :now"
_LIVE = "attribute_exists(pk) AND expires_at > :now"
_TRANSACTION_TRIES = 6


class DynamoDbStore:
    def __init__(
        self,
        table: str,
        client_factory: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.time,
        *,
        skew: float = 0.0,
    ) -> None:
        from .. import aws

        self.table = table
        self._client_factory = client_factory or (lambda: aws.client("dynamodb"))
        self._client: Any = None
        self._clock = clock
        self.skew = float(skew)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _item(self, key: Key, attrs: dict[str, Any], ttl: float) -> dict[str, Any]:
        item = {k: _serialize(v) for k, v in attrs.items() if k not in _RESERVED}
        item["pk"], item["sk"] = {"S": key[0]}, {"S": key[1]}
        # Whole seconds, as DynamoDB's TTL wants; rounded up, so an item never expires early.
        item["expires_at"] = {"N": str(math.ceil(self._clock() + ttl))}
        return item

    def _horizon(self) -> float:
        """Items whose `expires_at` is at or before this are expired: our clock, less the skew."""
        return self._clock() - self.skew

    def _now(self) -> dict[str, str]:
        """`:now` in every condition: the horizon, not the bare clock (see the module's docstring)."""
        return {"N": repr(round(self._horizon(), 3))}

    def add(self, key: Key, attrs: dict[str, Any], ttl: float) -> bool:
        try:
            self.client.put_item(
                TableName=self.table,
                Item=self._item(key, attrs, ttl),
                ConditionExpression=_ABSENT_OR_EXPIRED,
                ExpressionAttributeValues={":now": self._now()},
            )
        except ClientError as exc:
            if _conditional(exc):
                return False
            raise
        return True

    def get(self, key: Key) -> dict[str, Any] | None:
        item = self.client.get_item(
            TableName=self.table, Key={"pk": {"S": key[0]}, "sk": {"S": key[1]}}, ConsistentRead=True
        ).get("Item")
        if item is None or not _live(item, self._horizon()):
            return None
        return _attrs(item)

    def put(self, key: Key, attrs: dict[str, Any], ttl: float) -> None:
        self.client.put_item(TableName=self.table, Item=self._item(key, attrs, ttl))

    def delete(self, key: Key, *, owner: str | None = None) -> bool:
        params: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"pk": {"S": key[0]}, "sk": {"S": key[1]}},
            "ConditionExpression": _LIVE,
            "ExpressionAttributeValues": {":now": self._now()},
        }
        if owner is not None:
            params["ConditionExpression"] += " AND #owner = :owner"
            params["ExpressionAttributeNames"] = {"#owner": "owner"}
            params["ExpressionAttributeValues"][":owner"] = {"S": owner}
        try:
            self.client.delete_item(**params)
        except ClientError as exc:
            if _conditional(exc):
                return False
            raise
        return True

    def incr(self, key: Key, by: int, ttl: float, *, limit: int | None = None) -> int | None:
        for _ in range(3):
            condition = _LIVE
            values: dict[str, Any] = {":now": self._now(), ":by": {"N": str(by)}}
            if limit is not None:
                condition += " AND #count <= :max"
                values[":max"] = {"N": str(limit - by)}
            try:
                response = self.client.update_item(
                    TableName=self.table,
                    Key={"pk": {"S": key[0]}, "sk": {"S": key[1]}},
                    UpdateExpression="ADD #count :by",
                    ConditionExpression=condition,
                    ExpressionAttributeNames={"#count": "count"},
                    ExpressionAttributeValues=values,
                    ReturnValues="UPDATED_NEW",
                )
                return int(response["Attributes"]["count"]["N"])
            except ClientError as exc:
                if not _conditional(exc):
                    raise
            # Absent, expired, or at the limit: try to start a new window; if a live item
            # is in the way, it is at the limit (or another worker just started one).
            if limit is not None and by > limit:
                return None
            if self.add(key, {"count": by}, ttl):
                return by
            if limit is not None and self._at_limit(key, by, limit):
                return None
        return None

    def add_and_count(
        self, marker: Key, attrs: dict[str, Any], counter: Key, deltas: dict[str, int], ttl: float
    ) -> bool:
        names = {f"#f{i}": name for i, name in enumerate(deltas)}
        values: dict[str, Any] = {f":v{i}": {"N": str(by)} for i, by in enumerate(deltas.values())}
        values[":now"] = self._now()
        items = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": self._item(marker, attrs, ttl),
                    "ConditionExpression": _ABSENT_OR_EXPIRED,
                    "ExpressionAttributeValues": {":now": values[":now"]},
                }
            },
            {
                "Update": {
                    "TableName": self.table,
                    "Key": _key(counter),
                    "UpdateExpression": "ADD " + ", ".join(f"#f{i} :v{i}" for i in range(len(deltas))),
                    "ConditionExpression": _LIVE,
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                }
            },
        ]
        for attempt in range(_TRANSACTION_TRIES):
            try:
                self.client.transact_write_items(TransactItems=items)
                return True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                    raise
                reasons = [r.get("Code", "") for r in exc.response.get("CancellationReasons", [])]
                if "ConditionalCheckFailed" in reasons:
                    return False  # the marker exists (counted before), or the counter item is gone
                # TransactionConflict: another member of the same batch is being counted at this
                # very moment (DynamoDB refuses overlapping transactions on one item). Not counted
                # yet — try again shortly; botocore does not retry this by itself.
                if attempt == _TRANSACTION_TRIES - 1:
                    raise
                time.sleep(random.uniform(0.01, 0.05) * 2**attempt)
        return False

    def update(
        self, key: Key, *, set: dict[str, Any] | None = None, add: dict[str, int] | None = None, unless: str = ""
    ) -> dict[str, Any] | None:
        names: dict[str, str] = {}
        values: dict[str, Any] = {":now": self._now()}
        sets, adds = [], []
        for i, (name, value) in enumerate((set or {}).items()):
            names[f"#s{i}"], values[f":s{i}"] = name, _serialize(value)
            sets.append(f"#s{i} = :s{i}")
        for i, (name, by) in enumerate((add or {}).items()):
            names[f"#a{i}"], values[f":a{i}"] = name, {"N": str(by)}
            adds.append(f"#a{i} :a{i}")
        expression = " ".join(
            part
            for part in ("SET " + ", ".join(sets) if sets else "", "ADD " + ", ".join(adds) if adds else "")
            if part
        )
        condition = _LIVE
        if unless:
            names["#unless"] = unless
            condition += " AND attribute_not_exists(#unless)"
        params: dict[str, Any] = {
            "TableName": self.table,
            "Key": _key(key),
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_NEW",
        }
        if names:
            params["ExpressionAttributeNames"] = names
        if expression:
            params["UpdateExpression"] = expression
        else:
            return self.get(key)
        try:
            response = self.client.update_item(**params)
        except ClientError as exc:
            if _conditional(exc):
                return None
            raise
        return _attrs(response["Attributes"])

    def query(
        self, pk: str, *, limit: int | None = None, newest_first: bool = False, consistent: bool = True
    ) -> list[tuple[str, dict[str, Any]]]:
        found: list[tuple[str, dict[str, Any]]] = []
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ConsistentRead": consistent,
            "ScanIndexForward": not newest_first,
        }
        # With a limit, one request: its Limit is the whole read (paging would go on to the next page).
        if limit is not None:
            request["Limit"] = limit
        now = self._horizon()
        # Paged by hand, as in scan(): botocore's paginator looks through every service's data folder for
        # its paginator file on first use in a process (~10 ms), and a worker's first beat reads its
        # controls with a query.
        while True:
            page = self.client.query(**request)
            found.extend((item["sk"]["S"], _attrs(item)) for item in page.get("Items", []) if _live(item, now))
            if limit is not None or "LastEvaluatedKey" not in page:
                return found
            request["ExclusiveStartKey"] = _next_page(request, page)

    def scan(self, pk_prefix: str, sk: str) -> list[tuple[str, dict[str, Any]]]:
        found: list[tuple[str, dict[str, Any]]] = []
        request: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "begins_with(pk, :prefix) AND sk = :sk",
            "ExpressionAttributeValues": {":prefix": {"S": pk_prefix}, ":sk": {"S": sk}},
            "ConsistentRead": True,
        }
        now = self._horizon()
        while True:
            page = self.client.scan(**request)
            found.extend((item["pk"]["S"], _attrs(item)) for item in page.get("Items", []) if _live(item, now))
            if "LastEvaluatedKey" not in page:
                return found
            request["ExclusiveStartKey"] = _next_page(request, page)

    def scan_at_most(self, pk_prefix: str, sk: str, items: int) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        found: list[tuple[str, dict[str, Any]]] = []
        request: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "begins_with(pk, :prefix) AND sk = :sk",
            "ExpressionAttributeValues": {":prefix": {"S": pk_prefix}, ":sk": {"S": sk}},
        }
        now, read = self._horizon(), 0
        while read < items:
            # Limit counts the items read before the filter: it bounds what the read costs.
            page = self.client.scan(**request, Limit=min(1000, items - read))
            read += max(1, int(page.get("ScannedCount", 0)))
            found.extend((item["pk"]["S"], _attrs(item)) for item in page.get("Items", []) if _live(item, now))
            if "LastEvaluatedKey" not in page:
                return found, True
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found, False

    def _at_limit(self, key: Key, by: int, limit: int) -> bool:
        live = self.get(key)
        return live is not None and int(live.get("count", 0)) + by > limit


def _next_page(request: dict[str, Any], page: dict[str, Any]) -> Any:
    """Where the next page starts; an endpoint that answers the same key twice would page for ever
    (botocore's paginator refuses it too)."""
    following = page["LastEvaluatedKey"]
    if following == request.get("ExclusiveStartKey"):
        raise SqsJobsError(
            f"DynamoDB table {request['TableName']!r} answered the same LastEvaluatedKey twice; "
            "check AWS_ENDPOINT_URL_DYNAMODB (a DynamoDB-compatible endpoint that pages wrongly)"
        )
    return following


def _key(key: Key) -> dict[str, Any]:
    return {"pk": {"S": key[0]}, "sk": {"S": key[1]}}


def _live(item: dict[str, Any], now: float) -> bool:
    return float(item.get("expires_at", {}).get("N", "0")) > now


def _attrs(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deserialize(v)) for k, v in item.items() if k not in _RESERVED}


def _conditional(exc: ClientError) -> bool:
    return bool(exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; our attributes are ints and strings."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value
