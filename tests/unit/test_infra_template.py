"""infra/template.yaml: the wiring that keeps sqsjobs' guarantees on AWS, and cfn-lint on every template.

The template is read with a small YAML loader that understands CloudFormation's short tags, its
Fn::ForEach loops are expanded as AWS::LanguageExtensions does, and intrinsic functions are resolved
against the parameters' defaults (or overrides). References to resources resolve to markers:
`{"Ref": "Table"}` -> "@Table", `{"Fn::GetAtt": ["Queuehigh", "Arn"]}` -> "@Queuehigh.Arn".

Each `check_*` function holds the assertions for one concern. They run against the real template, and
`test_check_catches_a_broken_template` runs each of them against a template broken on purpose, so an
assertion that could never fail is itself a failing test. This module imports nothing from sqsjobs.

Alarms built on metric math are held to what they must do, not to how they are written: `metric_math`
evaluates their expressions the way CloudWatch does (a metric with no datapoint is missing, not 0), so a
check can ask "does one failed job page?" or "does a backlog with no live worker page?".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest
import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
TEMPLATE = INFRA / "template.yaml"

SQS_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:SendMessage",
    "sqs:GetQueueUrl",
    "sqs:GetQueueAttributes",
}
CONSUME = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}
# What the worker and the function call on the table (test_iam_least_privilege.py derives it from the code).
DYNAMODB_ITEM_ACTIONS = {
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
}
S3_OBJECT_ACTIONS = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
LOG_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}
FOURTEEN_DAYS = 14 * 24 * 3600
WORKER_SLEEP = 10  # `sqsjobs work --sleep` default: how long a SIGTERM may wait for the long poll to return
#: SAM event types that invoke a function on a schedule: a function with one is the scheduler, not a consumer.
SCHEDULE_EVENTS = ("ScheduleV2", "Schedule")
SCHEDULER_HANDLER = "lambda_handlers.schedule.handler"


# ----------------------------------------------------------------------------- loading


class _CfnLoader(yaml.SafeLoader):
    """A SafeLoader that turns `!Ref x`, `!Sub ...`, `!GetAtt a.b` ... into their long forms."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        raise yaml.constructor.ConstructorError(None, None, f"unexpected node for !{suffix}", node.start_mark)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        return {"Fn::GetAtt": value.split(".", 1)}
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_raw(path: Path = TEMPLATE) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_CfnLoader)  # type: ignore[no-any-return]


RAW = load_raw()


def _literal(value: Any) -> Any:
    """`{"Fn::Sub": "Queuehigh"}` (a Sub with nothing left to substitute) -> "Queuehigh"."""
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        text = value["Fn::Sub"]
        if isinstance(text, str) and "${" not in text:
            return text
    return value


def _replace(text: str, variables: dict[str, str]) -> str:
    for name, value in variables.items():
        text = text.replace("${" + name + "}", value)
        text = text.replace("&{" + name + "}", re.sub(r"[^0-9A-Za-z]", "", value))
    return text


def _expand(node: Any, params: dict[str, Any], variables: dict[str, str]) -> Any:
    """Expand Fn::ForEach as AWS::LanguageExtensions does: the identifier is replaced in keys, in
    Fn::Sub strings and where it is `Ref`'d; intrinsic logical IDs in Ref/GetAtt become literals."""
    if isinstance(node, list):
        return [_expand(item, params, variables) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"} and isinstance(node["Ref"], str) and node["Ref"] in variables:
        return variables[node["Ref"]]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("Fn::ForEach::"):
            identifier, collection, fragment = value
            items = params[collection["Ref"]] if isinstance(collection, dict) else collection
            for item in items:
                for new_key, new_value in _expand(fragment, params, {**variables, identifier: item}).items():
                    assert new_key not in out, f"Fn::ForEach generates {new_key} twice"
                    out[new_key] = new_value
            continue
        if key == "Fn::Sub":
            if isinstance(value, str):
                expanded: Any = _replace(value, variables)
            else:
                expanded = [_replace(value[0], variables), *_expand(value[1:], params, variables)]
        else:
            expanded = _expand(value, params, variables)
        if key == "Ref":
            expanded = _literal(expanded)
        elif key == "Fn::GetAtt" and isinstance(expanded, list):
            expanded = [_literal(part) for part in expanded]
        out[_replace(key, variables)] = expanded
    return out


class _NoValue:
    """AWS::NoValue: dropped from lists, removes a property."""


NO_VALUE = _NoValue()


class Template:
    """The template after Fn::ForEach, with intrinsic functions resolved against parameter values."""

    def __init__(self, raw: dict[str, Any], **overrides: Any) -> None:
        self.specs: dict[str, Any] = raw["Parameters"]
        self.params: dict[str, Any] = {}
        for name, spec in raw["Parameters"].items():
            value = overrides.get(name, spec.get("Default"))
            assert value is not None, f"parameter {name} has no default; give it to Template(...)"
            if spec["Type"] == "CommaDelimitedList" or spec["Type"].startswith("List<"):
                value = value if isinstance(value, list) else str(value).split(",")
            self.params[name] = value
        expanded = _expand(raw, self.params, {})
        self.mappings: dict[str, Any] = expanded.get("Mappings", {})
        self.conditions: dict[str, Any] = expanded.get("Conditions", {})
        self.all_resources: dict[str, Any] = expanded["Resources"]
        self.resources = {
            name: res
            for name, res in self.all_resources.items()
            if "Condition" not in res or self.condition(res["Condition"])
        }
        self.outputs = {
            name: out
            for name, out in expanded.get("Outputs", {}).items()
            if "Condition" not in out or self.condition(out["Condition"])
        }

    # -- resolution

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.conditions[name]))

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in (self.resolve(v) for v in value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {k: r for k, r in ((k, self.resolve(v)) for k, v in value.items()) if r is not NO_VALUE}
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return self._ref(arg)
        if fn == "Fn::GetAtt":
            return "@" + ".".join(str(self.resolve(part)) for part in arg)
        if fn == "Fn::Sub":
            return self._sub(arg)
        if fn == "Fn::Join":
            delimiter, items = arg
            return delimiter.join(str(item) for item in self._flat(self.resolve(items)))
        if fn == "Fn::Split":
            return str(self.resolve(arg[1])).split(arg[0])
        if fn == "Fn::Select":
            return self.resolve(arg[1])[int(self.resolve(arg[0]))]
        if fn == "Fn::FindInMap":
            name, top, second = (str(self.resolve(part)) for part in arg[:3])
            return self.mappings[name][top][second]
        if fn == "Fn::If":
            return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
        if fn == "Fn::Equals":
            return str(self.resolve(arg[0])) == str(self.resolve(arg[1]))
        if fn == "Fn::Not":
            return not self.resolve(arg[0])
        if fn == "Fn::And":
            return all(self.resolve(a) for a in arg)
        if fn == "Fn::Or":
            return any(self.resolve(a) for a in arg)
        if fn == "Condition":
            return self.condition(arg)
        return {k: self.resolve(v) for k, v in value.items()}

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.params:
            return self.params[name]
        return "@" + name

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(self.resolve(variables[name]))
            if name in self.params:
                return str(self.params[name])
            return "@" + name

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def _flat(self, items: Any) -> Iterator[Any]:
        for item in items if isinstance(items, list) else [items]:
            if isinstance(item, list):
                yield from self._flat(item)
            else:
                yield item

    # -- queries

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {
            name: self.resolve(res.get("Properties", {})) for name, res in self.resources.items() if res["Type"] == kind
        }

    def one(self, kind: str) -> tuple[str, dict[str, Any]]:
        found = self.of_type(kind)
        assert len(found) == 1, f"expected one {kind}, found {sorted(found)}"
        return next(iter(found.items()))

    def source_queues(self) -> dict[str, dict[str, Any]]:
        """SQS queues that have a RedrivePolicy or are not the target of one (i.e. everything but DLQs)."""
        queues = self.of_type("AWS::SQS::Queue")
        return {name: props for name, props in queues.items() if name not in self.dlq_names()}

    def dlq_names(self) -> set[str]:
        names = set()
        for props in self.of_type("AWS::SQS::Queue").values():
            target = props.get("RedrivePolicy", {}).get("deadLetterTargetArn", "")
            if target.startswith("@") and target.endswith(".Arn"):
                names.add(target[1:-4])
        return names

    def queue_named(self, physical: str) -> str:
        for name, props in self.of_type("AWS::SQS::Queue").items():
            if props.get("QueueName") == physical:
                return name
        raise AssertionError(f"no queue named {physical}")

    def lambda_fed(self) -> dict[str, dict[str, Any]]:
        """Queue logical ID -> the event source mapping that feeds it."""
        fed = {}
        for mapping in self.of_type("AWS::Lambda::EventSourceMapping").values():
            arn = str(mapping["EventSourceArn"])
            assert arn.startswith("@") and arn.endswith(".Arn"), f"mapping source {arn} is not a queue of this stack"
            fed[arn[1:-4]] = mapping
        return fed

    def consumers(self) -> dict[str, dict[str, Any]]:
        """The functions that consume queues: every function but the scheduler."""
        return {
            name: function
            for name, function in self.of_type("AWS::Serverless::Function").items()
            if name not in self.schedulers()
        }

    def schedulers(self) -> dict[str, dict[str, Any]]:
        """The functions invoked on a schedule (Scheduler=lambda), not by an event source mapping."""
        return {
            name: function
            for name, function in self.of_type("AWS::Serverless::Function").items()
            if any(event.get("Type") in SCHEDULE_EVENTS for event in function.get("Events", {}).values())
        }

    def function_name(self) -> str:
        found = self.consumers()
        assert len(found) == 1, f"expected one consumer function, found {sorted(found)}"
        return next(iter(found))

    def function(self) -> dict[str, Any]:
        return self.consumers()[self.function_name()]

    def container(self) -> dict[str, Any]:
        _, task = self.one("AWS::ECS::TaskDefinition")
        (container,) = task["ContainerDefinitions"]
        return container  # type: ignore[no-any-return]

    def worker_queue_names(self) -> list[str]:
        """Physical names of the queues the ECS command consumes, in priority order."""
        command = [str(part) for part in self.container()["Command"]]
        assert command[0] == "work", f"the container must run `sqsjobs work`, not {command}"
        logical = command[command.index("--queue") + 1].split(",")
        return [self.prefix() + name for name in logical]

    def prefix(self) -> str:
        return str(self.function()["Environment"]["Variables"]["SQSJOBS_QUEUE_PREFIX"])

    def container_env(self) -> dict[str, str]:
        return {e["Name"]: str(e["Value"]) for e in self.container()["Environment"]}

    def payload_objects(self) -> str:
        """The ARN pattern of the payload objects: the bucket's, under SQSJOBS_PAYLOAD_PREFIX (the same for both
        consumers, or neither may read what the other wrote)."""
        prefix = self.container_env()["SQSJOBS_PAYLOAD_PREFIX"]
        assert self.function()["Environment"]["Variables"]["SQSJOBS_PAYLOAD_PREFIX"] == prefix
        assert prefix and prefix.endswith("/") and "*" not in prefix, f"payload prefix {prefix!r}"
        return "@" + self.one("AWS::S3::Bucket")[0] + ".Arn/" + prefix + "*"

    def roles(self) -> dict[str, str]:
        """{"lambda": role, "worker": role}: the roles the consumers' code runs with."""
        _, task = self.one("AWS::ECS::TaskDefinition")
        return {
            "lambda": str(self.function()["Role"]).removeprefix("@").removesuffix(".Arn"),
            "worker": str(task["TaskRoleArn"]).removeprefix("@").removesuffix(".Arn"),
        }

    def identity_policies(self) -> Iterator[tuple[str, set[str], dict[str, Any]]]:
        """(where, roles it applies to, statement) for every identity policy statement in the stack."""
        for name, props in self.of_type("AWS::IAM::Role").items():
            for policy in props.get("Policies", []):
                for statement in _statements(policy["PolicyDocument"]):
                    yield f"{name}/{policy['PolicyName']}", {name}, statement
        for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for name, props in self.of_type(kind).items():
                roles = {str(r).lstrip("@") for r in props.get("Roles", [])}
                for statement in _statements(props["PolicyDocument"]):
                    yield name, roles, statement
        for name, props in self.of_type("AWS::Serverless::Function").items():
            for policy in props.get("Policies", []):
                if isinstance(policy, dict) and "Statement" in policy:
                    for statement in _statements(policy):
                        yield f"{name}/Policies", {name}, statement

    def grants(self, role: str) -> set[tuple[str, str]]:
        """(action, resource) pairs allowed to `role`."""
        pairs = set()
        for _, roles, statement in self.identity_policies():
            if role in roles and statement.get("Effect") == "Allow":
                for action in _as_list(statement.get("Action")):
                    for resource in _as_list(statement.get("Resource")):
                        pairs.add((str(action), str(resource)))
        return pairs


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return _as_list(document["Statement"])


# ------------------------------------------------------------------------- metric math

_MATH_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([A-Za-z_]\w*)|(==|!=|>=|<=|[-+*/(),<>]))")
#: A parsed metric-math expression: ("number", 1.0), ("metric", "id"), ("call", "IF", [args]) or (op, left, right).
Node = tuple[Any, ...]
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}


def metric_math(expression: str, values: dict[str, float | None]) -> float | None:
    """Evaluate a CloudWatch metric-math expression at one timestamp, for the subset the template uses.

    `values` maps metric ids to a datapoint, or None where the metric has none (a count nobody emitted). As in
    CloudWatch, arithmetic and comparisons with a missing datapoint are missing, FILL(m, v) replaces it,
    comparisons give 1 or 0, AND/OR combine them and IF(c, a, b) is a where c is not 0. The result None means
    "no datapoint": an alarm then follows its TreatMissingData."""
    tokens: list[str] = []
    position = 0
    while position < len(expression.rstrip()):
        match = _MATH_TOKEN.match(expression, position)
        assert match, f"cannot read {expression[position:]!r} in {expression!r}"
        tokens.append(match.group(match.lastindex or 0))
        position = match.end()

    def peek() -> str | None:
        return tokens[0] if tokens else None

    def take(expected: str | None = None) -> str:
        token = tokens.pop(0)
        assert expected is None or token == expected, f"expected {expected}, found {token} in {expression!r}"
        return token

    def either() -> Node:
        node = both()
        while peek() in ("OR", "||"):
            take()
            node = ("OR", node, both())
        return node

    def both() -> Node:
        node = compare()
        while peek() in ("AND", "&&"):
            take()
            node = ("AND", node, compare())
        return node

    def compare() -> Node:
        node = total()
        if peek() in _COMPARE:
            node = (take(), node, total())
        return node

    def total() -> Node:
        node = product()
        while peek() in ("+", "-"):
            node = (take(), node, product())
        return node

    def product() -> Node:
        node = atom()
        while peek() in ("*", "/"):
            node = (take(), node, atom())
        return node

    def atom() -> Node:
        token = take()
        if token == "(":
            node = either()
            take(")")
            return node
        if re.fullmatch(r"\d+(?:\.\d+)?", token):
            return ("number", float(token))
        if peek() == "(":
            take("(")
            args = [either()]
            while peek() == ",":
                take(",")
                args.append(either())
            take(")")
            return ("call", token, args)
        return ("metric", token)

    def evaluate(node: Node) -> float | None:
        kind = node[0]
        if kind == "number":
            return float(node[1])
        if kind == "metric":
            assert node[1] in values, f"{expression!r} reads {node[1]}, not given"
            return values[node[1]]
        if kind == "call":
            name, args = node[1], node[2]
            if name == "IF":
                condition = evaluate(args[0])
                return None if condition is None else evaluate(args[1] if condition else args[2])
            if name == "FILL":
                value = evaluate(args[0])
                return evaluate(args[1]) if value is None else value
            raise AssertionError(f"metric-math function {name} is not modelled here")
        left, right = evaluate(node[1]), evaluate(node[2])
        if left is None or right is None:
            return None
        if kind in _COMPARE:
            return 1.0 if _COMPARE[kind](left, right) else 0.0
        if kind == "AND":
            return 1.0 if left and right else 0.0
        if kind == "OR":
            return 1.0 if left or right else 0.0
        if kind == "/":
            return None if right == 0 else left / right
        return {"+": left + right, "-": left - right, "*": left * right}[kind]

    tree = either()
    assert not tokens, f"{expression!r}: {tokens} left over"
    return evaluate(tree)


def fires(alarm: dict[str, Any], values: dict[str, float | None]) -> bool:
    """Whether a metric-math alarm is breaching with these datapoints (ids as in its Metrics)."""
    (result,) = [m for m in alarm["Metrics"] if m.get("ReturnData", True)]
    value = metric_math(str(result["Expression"]), values)
    if value is None:
        return alarm.get("TreatMissingData") == "breaching"
    threshold, operator = float(alarm["Threshold"]), alarm["ComparisonOperator"]
    return {
        "GreaterThanThreshold": value > threshold,
        "GreaterThanOrEqualToThreshold": value >= threshold,
        "LessThanThreshold": value < threshold,
        "LessThanOrEqualToThreshold": value <= threshold,
    }[operator]


def metric_ids(alarm: dict[str, Any]) -> dict[str, str]:
    """MetricName -> id, for the metrics a metric-math alarm reads."""
    return {m["MetricStat"]["Metric"]["MetricName"]: m["Id"] for m in alarm.get("Metrics", []) if "MetricStat" in m}


def metric_stats(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    return [m["MetricStat"] for m in alarm.get("Metrics", []) if "MetricStat" in m]


# Parameters without a default, with the value the tests deploy.
REQUIRED = {"JobsModule": "myapp.jobs"}


def build(raw: dict[str, Any] | None = None, **overrides: Any) -> Template:
    return Template(RAW if raw is None else raw, **{**REQUIRED, **overrides})


# ------------------------------------------------------------------------------ checks


def check_queues_and_redrive(t: Template) -> None:
    """Each queue has its own DLQ (14 days) and a maxReceiveCount above every consumer's tries."""
    queues = t.of_type("AWS::SQS::Queue")
    sources = t.source_queues()
    names = {props["QueueName"] for props in sources.values()}
    assert {t.prefix() + "high", t.prefix() + "default"} <= names, f"high and default must exist, got {names}"
    tries = [int(t.params["MaxTries"])]
    tries.append(int(t.function()["Environment"]["Variables"]["SQSJOBS_TRIES"]))
    tries.append(int(t.container_env()["SQSJOBS_TRIES"]))
    targets = [str(p["RedrivePolicy"]["deadLetterTargetArn"]) for p in queues.values() if "RedrivePolicy" in p]
    shared = {target for target in targets if targets.count(target) > 1}
    assert not shared, f"{shared} is the DLQ of several queues; each queue needs its own"
    for name, props in sources.items():
        policy = props.get("RedrivePolicy")
        assert policy, f"{name} has no RedrivePolicy: failed jobs would have nowhere to go"
        target = str(policy["deadLetterTargetArn"])
        assert target.startswith("@") and target.endswith(".Arn"), f"{name} redrives to {target}, not a stack queue"
        dlq = target[1:-4]
        assert dlq in queues, f"{name} redrives to {dlq}, which is not an SQS queue of this stack"
        assert "RedrivePolicy" not in queues[dlq], f"the DLQ {dlq} must not redrive anywhere"
        assert int(queues[dlq]["MessageRetentionPeriod"]) == FOURTEEN_DAYS, f"{dlq} must keep messages 14 days"
        assert queues[dlq]["QueueName"] == props["QueueName"] + "-dlq", f"{dlq} is not named <queue>-dlq"
        # A redriven message keeps its original enqueue time, so the DLQ must keep messages longer.
        assert int(props.get("MessageRetentionPeriod", 345600)) < int(queues[dlq]["MessageRetentionPeriod"]), name
        receives = int(policy["maxReceiveCount"])
        assert receives > max(tries), (
            f"{name}: maxReceiveCount {receives} must exceed the largest tries {max(tries)}, or the redrive "
            "policy moves jobs to the DLQ before sqsjobs records why"
        )


def check_event_source_mappings(t: Template) -> None:
    """Lambda-fed queues: partial batch responses, a concurrency cap, a sane batch."""
    mappings = t.lambda_fed()
    assert mappings, "no SQS event source mapping: the Lambda consumer is not wired"
    function_name = "@" + t.function_name()
    for queue, mapping in mappings.items():
        assert mapping["FunctionName"] == function_name, f"the mapping of {queue} does not invoke the jobs function"
        assert "ReportBatchItemFailures" in mapping.get("FunctionResponseTypes", []), (
            f"the mapping of {queue} lacks ReportBatchItemFailures: one released job would retry the whole batch"
        )
        concurrency = int(mapping.get("ScalingConfig", {}).get("MaximumConcurrency", 0))
        assert 2 <= concurrency <= 1000, f"the mapping of {queue} needs ScalingConfig.MaximumConcurrency (2-1000)"
        batch = int(mapping["BatchSize"])
        window = int(mapping.get("MaximumBatchingWindowInSeconds", 0))
        assert 0 < batch <= 10_000, f"the mapping of {queue}: BatchSize {batch} is outside 1-10,000"
        assert batch <= 10 or window >= 1, f"the mapping of {queue}: BatchSize above 10 needs a batching window"
        consume_policy = "@ConsumePolicy" + queue.removeprefix("Queue")
        assert consume_policy in repr(mapping), (
            f"the mapping of {queue} must reference {consume_policy[1:]} so it is created after its permissions"
        )


def check_lambda_visibility_timeout(t: Template) -> None:
    """A Lambda-fed queue hides a message for at least 6x the function timeout (AWS's advice), plus the batching
    window: the mapping has received the messages (their visibility runs) while it waits to fill a batch."""
    timeout = int(t.function()["Timeout"])
    queues = t.of_type("AWS::SQS::Queue")
    assert t.lambda_fed()
    for queue, mapping in t.lambda_fed().items():
        visibility = int(queues[queue]["VisibilityTimeout"])
        window = int(mapping.get("MaximumBatchingWindowInSeconds", 0))
        assert visibility >= 6 * timeout + window, (
            f"{queue}: VisibilityTimeout {visibility} < 6 x function timeout {timeout} + batching window {window}"
        )
        assert visibility <= 43200


def check_consumers(t: Template) -> None:
    """Every queue has exactly one consumer; the poller's queues scale the service on backlog per task."""
    sources = t.source_queues()
    lambda_fed = set(t.lambda_fed())
    worker_fed = [t.queue_named(physical) for physical in t.worker_queue_names()]
    assert worker_fed, "the ECS poller consumes no queue"
    assert not lambda_fed & set(worker_fed), f"{lambda_fed & set(worker_fed)} consumed by both Lambda and the poller"
    assert lambda_fed | set(worker_fed) == set(sources), "every queue needs a consumer, and only stack queues have one"
    policies = t.of_type("AWS::ApplicationAutoScaling::ScalingPolicy")
    _, target = t.one("AWS::ApplicationAutoScaling::ScalableTarget")
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"
    assert 0 < int(target["MinCapacity"]) <= int(target["MaxCapacity"]), "the poller needs at least one task"
    scaled = set()
    for name, policy in policies.items():
        config = policy["TargetTrackingScalingPolicyConfiguration"]
        metrics = config["CustomizedMetricSpecification"]["Metrics"]
        by_id = {m["Id"]: m for m in metrics}
        (result,) = [m for m in metrics if m.get("ReturnData", True)]
        numerator, denominator = (part.strip() for part in result["Expression"].split("/"))
        visible = by_id[numerator]["MetricStat"]["Metric"]
        tasks = by_id[denominator]["MetricStat"]["Metric"]
        assert visible["MetricName"] == "ApproximateNumberOfMessagesVisible", name
        assert tasks["MetricName"] == "RunningTaskCount", name
        (dimension,) = visible["Dimensions"]
        scaled.add(str(dimension["Value"]).removeprefix("@").removesuffix(".QueueName"))
        assert float(config["TargetValue"]) > 0
    assert scaled == set(worker_fed), f"scaling policies cover {scaled}, the poller consumes {set(worker_fed)}"
    _, cluster = t.one("AWS::ECS::Cluster")
    assert {"Name": "containerInsights", "Value": "enabled"} in cluster.get("ClusterSettings", []), (
        "RunningTaskCount comes from Container Insights"
    )


PAGING, NOTICE = "@AlarmTopic", "@NoticeTopic"
#: Paging alarms whose threshold is structural (their expression is a 0/1 condition or a shortfall) rather than
#: a parameter; check_consumer_alarms and check_service_alarms hold their expressions to what they must mean.
CONDITION_ALARMS = ("NoConsumerAlarm", "WorkerTasksAlarm")
#: Paging alarms on "any error in each of N periods in a row": the periods are the setting, the threshold is 0.
CONSECUTIVE_ALARMS = ("ScheduleErrorsAlarm",)


def _actions(alarm: dict[str, Any]) -> set[str]:
    return {str(a) for a in alarm.get("AlarmActions", [])}


def paging_alarms(t: Template) -> dict[str, dict[str, Any]]:
    return {name: a for name, a in t.of_type("AWS::CloudWatch::Alarm").items() if PAGING in _actions(a)}


def _logical(t: Template, physical: str) -> str:
    return physical.removeprefix(f"{t.params['AppName']}-")


def _watching(alarms: dict[str, dict[str, Any]], metric: str, queue: str) -> dict[str, dict[str, Any]]:
    return {
        name: a
        for name, a in alarms.items()
        if a.get("Namespace") == "AWS/SQS"
        and a.get("MetricName") == metric
        and a.get("Dimensions") == [{"Name": "QueueName", "Value": f"@{queue}.QueueName"}]
    }


def check_alarms(t: Template) -> None:
    """Two topics: AlarmTopic pages, NoticeTopic does not. A failed job waiting in a DLQ is a notice (one job
    failing must never page), and so is a DLQ message getting old, early enough to act before SQS deletes it. A
    queue that backs up or ages pages. Every paging threshold is a parameter."""
    alarms = t.of_type("AWS::CloudWatch::Alarm")
    assert {"AlarmTopic", "NoticeTopic"} <= set(t.of_type("AWS::SNS::Topic"))
    for name, alarm in alarms.items():
        actions = _actions(alarm)
        assert actions in ({PAGING}, {NOTICE}), f"{name} must notify exactly one of the two topics, not {actions}"
        assert {str(a) for a in alarm.get("OKActions", [])} <= actions, f"{name}: OK goes elsewhere than ALARM"
        if actions == {PAGING}:
            threshold = t.resources[name]["Properties"]["Threshold"]
            if name.startswith(CONDITION_ALARMS):
                assert "Metrics" in alarm and float(alarm["Threshold"]) == 0, name
            elif name in CONSECUTIVE_ALARMS:
                assert float(alarm["Threshold"]) == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold", name
                periods = int(alarm["EvaluationPeriods"])
                assert periods > 1 and int(alarm.get("DatapointsToAlarm", periods)) == periods, (
                    f"{name}: must need an error in each of several periods in a row, or one blip pages"
                )
            else:
                assert isinstance(threshold, dict) and threshold.get("Ref") in t.params, (
                    f"the paging alarm {name} has a fixed threshold {threshold}: make it a parameter"
                )
    paging = {name: alarms[name] for name in paging_alarms(t)}
    notices = {name: a for name, a in alarms.items() if name not in paging}
    queues = t.of_type("AWS::SQS::Queue")
    for name, alarm in paging.items():
        watched = repr(alarm.get("Dimensions", [])) + repr(alarm.get("Metrics", []))
        for dlq in t.dlq_names():
            assert f"@{dlq}." not in watched, f"the paging alarm {name} watches the DLQ {dlq}: that is a notice"

    for source, props in t.source_queues().items():
        dlq = str(props["RedrivePolicy"]["deadLetterTargetArn"])[1:-4]
        depth = _watching(alarms, "ApproximateNumberOfMessagesVisible", dlq)
        assert depth, f"no alarm on the depth of {dlq}"
        for name, alarm in depth.items():
            assert name in notices, f"{name}: a failed job in {dlq} must notify the notice topic, never page"
            op, threshold = alarm["ComparisonOperator"], float(alarm["Threshold"])
            fires_on_one = (op == "GreaterThanThreshold" and threshold < 1) or (
                op == "GreaterThanOrEqualToThreshold" and 0 < threshold <= 1
            )
            assert fires_on_one, f"the alarm on {dlq} must fire on a single failed job ({op} {threshold})"
        aging = _watching(notices, "ApproximateAgeOfOldestMessage", dlq)
        assert aging, f"no notice before the messages in {dlq} expire"
        for name, alarm in aging.items():
            # A message SQS moved keeps its enqueue time: it may have spent up to the source's retention there.
            expires = int(queues[dlq]["MessageRetentionPeriod"]) - int(props["MessageRetentionPeriod"])
            assert float(alarm["Threshold"]) < expires, (
                f"{name} fires after {alarm['Threshold']} s, but a redriven message in {dlq} may expire after "
                f"{expires} s"
            )
        for metric in ("ApproximateAgeOfOldestMessage", "ApproximateNumberOfMessagesVisible"):
            found = _watching(paging, metric, source)
            assert found, f"no paging alarm on {metric} of {source}"
            for alarm in found.values():
                assert alarm["ComparisonOperator"] in ("GreaterThanThreshold", "GreaterThanOrEqualToThreshold")
                assert float(alarm["Threshold"]) > 0


def check_failure_rate_alarms(t: Template) -> None:
    """Per queue, failed / (processed + failed) over 15 minutes from sqsjobs' metrics pages above
    FailureRateThreshold, but only with at least FailureRateMinJobs jobs: one failure of one job never pages."""
    namespace = t.params["MetricsNamespace"]
    threshold = float(t.params["FailureRateThreshold"])
    least = int(t.params["FailureRateMinJobs"])
    assert least >= 2, "FailureRateMinJobs below 2 lets a single failed job page"
    paging = paging_alarms(t)
    for source, props in t.source_queues().items():
        queue = _logical(t, props["QueueName"])
        found = {
            name: a
            for name, a in paging.items()
            if set(metric_ids(a)) == {"processed", "failed"}
            and all(
                m["Metric"]["Namespace"] == namespace
                and m["Metric"]["Dimensions"] == [{"Name": "queue", "Value": queue}]
                for m in metric_stats(a)
            )
        }
        assert len(found) == 1, f"{source}: one failure-rate alarm on {namespace} processed/failed for queue={queue}"
        ((name, alarm),) = found.items()
        assert t.resources[name]["Properties"]["Threshold"] == {"Ref": "FailureRateThreshold"}
        for stat in metric_stats(alarm):
            assert stat["Stat"] == "Sum", name
            assert int(stat["Period"]) * int(alarm["EvaluationPeriods"]) == 900, f"{name}: not a 15-minute rate"

        def pages(processed: float | None, failed: float | None, alarm: dict[str, Any] = alarm) -> bool:
            got = metric_ids(alarm)
            return fires(alarm, {got["processed"]: processed, got["failed"]: failed})

        assert not pages(None, 1) and not pages(0, 1) and not pages(1, 1), f"{name}: one failed job pages"
        assert not pages(None, least - 1), f"{name}: pages below FailureRateMinJobs"
        assert pages(None, least) and pages(0, least), f"{name}: every job failing does not page"
        total = max(least, 100)
        at = int(threshold * total)
        assert not pages(total - at, at), f"{name}: pages at (not above) the threshold"
        if at + 1 <= total:
            assert pages(total - at - 1, at + 1), f"{name}: does not page above the threshold"
        assert not pages(total, 0) and not pages(None, None)


def check_consumer_alarms(t: Template) -> None:
    """A backlog that nothing consumes pages: for a poller queue, no `worker_alive` from any poller; for a
    Lambda queue, no invocation. The consumers emit the metrics these alarms read, in MetricsNamespace."""
    namespace = t.params["MetricsNamespace"]
    paging = paging_alarms(t)
    worker_fed: set[str] = set()
    if t.of_type("AWS::ECS::TaskDefinition"):
        command = [str(part) for part in t.container()["Command"]]
        served = command[command.index("--queue") + 1].split(",")
        worker_fed = {t.queue_named(f"{t.params['AppName']}-{queue}") for queue in served}
        env = t.container_env()
        assert env.get("SQSJOBS_METRICS") == "emf", "the poller emits no metrics: worker_alive alarms would fire"
        assert env.get("SQSJOBS_METRICS_NAMESPACE") == namespace
    if t.lambda_fed():
        assert t.function()["Environment"]["Variables"].get("POWERTOOLS_METRICS_NAMESPACE") == namespace
    function = "@" + next(iter(t.consumers()), "none")
    for source, props in t.source_queues().items():
        queue = _logical(t, props["QueueName"])
        backlog = {
            name: a
            for name, a in paging.items()
            if any(
                m["Metric"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
                and m["Metric"]["Dimensions"] == [{"Name": "QueueName", "Value": f"@{source}.QueueName"}]
                for m in metric_stats(a)
            )
        }
        assert len(backlog) == 1, f"{source}: one paging alarm on a backlog with no consumer, found {sorted(backlog)}"
        ((name, alarm),) = backlog.items()
        ids = metric_ids(alarm)
        for stat in metric_stats(alarm):
            if stat["Metric"]["MetricName"] == "ApproximateNumberOfMessagesVisible":
                assert stat["Stat"] == "Minimum", f"{name}: a backlog is there all period, not at one moment"
        window = int(metric_stats(alarm)[0]["Period"]) * int(alarm["EvaluationPeriods"])
        assert 300 <= window <= 900, f"{name}: {window} s before it pages"
        if source in worker_fed:
            (alive,) = [m for m in metric_stats(alarm) if m["Metric"]["MetricName"] == "worker_alive"]
            assert alive["Metric"]["Namespace"] == namespace and alive["Stat"] == "Sum"
            assert alive["Metric"]["Dimensions"] == [{"Name": "queue", "Value": queue}], name

            def stalled(backlog: float | None, beats: float | None, alarm: dict[str, Any] = alarm) -> bool:
                got = metric_ids(alarm)
                return fires(alarm, {got["ApproximateNumberOfMessagesVisible"]: backlog, got["worker_alive"]: beats})

            assert stalled(5, None) and stalled(5, 0), f"{name}: a backlog with no live worker does not page"
            assert not stalled(5, 3) and not stalled(0, None) and not stalled(None, None), name
        else:
            (invocations,) = [m for m in metric_stats(alarm) if m["Metric"]["MetricName"] == "Invocations"]
            assert invocations["Metric"]["Namespace"] == "AWS/Lambda"
            assert invocations["Metric"]["Dimensions"] == [{"Name": "FunctionName", "Value": function}], name
            received = ids.get("NumberOfMessagesReceived")

            def idle(
                backlog: float | None, calls: float | None, receives: float | None, alarm: dict[str, Any] = alarm
            ) -> bool:
                got = metric_ids(alarm)
                values = {got["ApproximateNumberOfMessagesVisible"]: backlog, got["Invocations"]: calls}
                if "NumberOfMessagesReceived" in got:
                    values[got["NumberOfMessagesReceived"]] = receives
                return fires(alarm, values)

            # Received but never invoked: the function throttled to nothing, or failing before it runs.
            assert idle(5, None, 10) and idle(5, 0, 10), f"{name}: a backlog with no invocation does not page"
            assert not idle(5, 10, 10) and not idle(0, None, 0) and not idle(None, None, None), name
            if received:
                # Invocations are the function's, for every queue: a mapping that receives nothing from this one.
                assert idle(5, 10, 0) and idle(5, 10, None), f"{name}: a queue its mapping ignores does not page"


def check_service_alarms(t: Template) -> None:
    """The function's errors and throttles page above a parameter; so do fewer poller tasks than desired. (The
    scheduler's errors alarm is check_scheduler's.)"""
    paging = paging_alarms(t)
    functions = t.consumers()
    for metric in ("Errors", "Throttles"):
        found = {
            name: a
            for name, a in paging.items()
            if a.get("Namespace") == "AWS/Lambda"
            and a.get("MetricName") == metric
            and a.get("Dimensions") == [{"Name": "FunctionName", "Value": f"@{function}"} for function in functions]
        }
        assert len(found) == (1 if functions else 0), f"one paging alarm on the function's {metric}: {sorted(found)}"
    services = t.of_type("AWS::ECS::Service")
    tasks = {name: a for name, a in paging.items() if "RunningTaskCount" in metric_ids(a)}
    assert len(tasks) == len(services), f"one paging alarm on each poller's running tasks: {sorted(tasks)}"
    for name, alarm in tasks.items():
        ids = metric_ids(alarm)
        assert set(ids) == {"RunningTaskCount", "DesiredTaskCount"}, name
        for stat in metric_stats(alarm):
            assert stat["Metric"]["Namespace"] == "ECS/ContainerInsights"
            dims = {d["Name"]: d["Value"] for d in stat["Metric"]["Dimensions"]}
            assert dims == {"ClusterName": "@WorkerCluster", "ServiceName": "@WorkerService.Name"}, name

        def short(desired: float, running: float, alarm: dict[str, Any] = alarm) -> bool:
            got = metric_ids(alarm)
            return fires(alarm, {got["DesiredTaskCount"]: desired, got["RunningTaskCount"]: running})

        assert short(2, 1) and short(1, 0), f"{name}: a missing task does not page"
        assert not short(2, 2) and not short(2, 3), f"{name}: pages with every task running (or mid-deployment)"
        assert int(alarm["EvaluationPeriods"]) * int(metric_stats(alarm)[0]["Period"]) >= 300, f"{name}: a blip pages"


def check_failed_jobs_store(t: Template) -> None:
    """What failed jobs need survives deleting or replacing the stack: the DLQs, the table, the payload bucket
    and the logs are retained. Each DLQ accepts only its own source queue, and outlives it for every allowed
    QueueRetentionPeriod (a message SQS moves keeps its enqueue time)."""
    kept = set(t.dlq_names()) | set(t.of_type("AWS::DynamoDB::Table")) | set(t.of_type("AWS::Logs::LogGroup"))
    kept |= set(t.of_type("AWS::S3::Bucket"))
    assert t.dlq_names() and t.of_type("AWS::Logs::LogGroup")
    for name in kept:
        resource = t.resources[name]
        for policy in ("DeletionPolicy", "UpdateReplacePolicy"):
            assert resource.get(policy) == "Retain", f"{name}: {policy} must be Retain, not {resource.get(policy)}"
    queues = t.of_type("AWS::SQS::Queue")
    longest = int(t.specs["QueueRetentionPeriod"]["MaxValue"])
    for source, props in t.source_queues().items():
        dlq = str(props["RedrivePolicy"]["deadLetterTargetArn"])[1:-4]
        arn = f"arn:@AWS::Partition:sqs:@AWS::Region:@AWS::AccountId:{props['QueueName']}"
        assert queues[dlq].get("RedriveAllowPolicy") == {"redrivePermission": "byQueue", "sourceQueueArns": [arn]}, (
            f"{dlq} must accept only {props['QueueName']} as its source: {queues[dlq].get('RedriveAllowPolicy')}"
        )
        assert t.resources[source]["Properties"]["MessageRetentionPeriod"] == {"Ref": "QueueRetentionPeriod"}, (
            f"{source}: its retention must be QueueRetentionPeriod, whose MaxValue keeps it below the DLQ's"
        )
        retention = int(queues[dlq]["MessageRetentionPeriod"])
        assert retention == FOURTEEN_DAYS, f"{dlq} must keep messages 14 days, the SQS maximum"
        assert longest < retention, f"QueueRetentionPeriod may reach {longest} s, {dlq} keeps {retention} s"


def check_trust_policies(t: Template) -> None:
    """Every role a service assumes trusts that service only on behalf of this account (confused deputy)."""
    roles = t.of_type("AWS::IAM::Role")
    assert roles
    for name, role in roles.items():
        for statement in _statements(role["AssumeRolePolicyDocument"]):
            if "Service" not in statement.get("Principal", {}):
                continue
            source = statement.get("Condition", {}).get("StringEquals", {}).get("aws:SourceAccount")
            assert source == "@AWS::AccountId", f"{name}: trust policy without aws:SourceAccount = this account"


def _dashboard_lines(metrics: list[list[Any]]) -> Iterator[tuple[list[Any], dict[str, Any]]]:
    """(values, options) per line of a metric widget, with "." (the value above) and "..." (all the values
    above but the ones that follow it) expanded as CloudWatch does."""
    previous: list[Any] = []
    for entry in metrics:
        values = [v for v in entry if not isinstance(v, dict)]
        options = next((v for v in entry if isinstance(v, dict)), {})
        if values and values[0] == "...":
            values = previous[: len(previous) - (len(values) - 1)] + values[1:]
        else:
            values = [previous[i] if v == "." else v for i, v in enumerate(values)]
        if values:
            previous = values
        yield values, options


def check_dashboard(t: Template) -> None:
    """One dashboard: per queue its backlog, in-flight, oldest age and DLQ depth, its jobs' outcomes, runtime
    (p50, p95, max) and wait (p95); the function's invocations, errors, throttles and duration; the poller's
    running tasks."""
    ((_, dashboard),) = t.of_type("AWS::CloudWatch::Dashboard").items()
    body = json.loads(dashboard["DashboardBody"])
    namespace, app = t.params["MetricsNamespace"], t.params["AppName"]
    queues = {_logical(t, props["QueueName"]) for props in t.source_queues().values()}
    graphed: dict[tuple[str, str, str], set[tuple[tuple[str, str], ...]]] = {}
    searches: list[str] = []
    for widget in body["widgets"]:
        if widget["type"] != "metric":
            continue
        properties = widget["properties"]
        assert properties["region"] == "@AWS::Region"
        for values, options in _dashboard_lines(properties["metrics"]):
            if "expression" in options:
                searches.append(options["expression"])
                continue
            space, metric, *dims = values
            stat = options.get("stat", properties.get("stat"))
            graphed.setdefault((space, metric, stat), set()).add(tuple(zip(dims[::2], dims[1::2], strict=True)))
    for metric, stat in [
        ("processed", "Sum"),
        ("failed", "Sum"),
        ("released", "Sum"),
        ("runtime", "p50"),
        ("runtime", "p95"),
        ("runtime", "Maximum"),
        ("wait", "p95"),
    ]:
        lines = graphed.get((namespace, metric, stat), set())
        assert lines == {(("queue", q),) for q in queues}, f"{metric} {stat}: graphs {lines}, queues are {queues}"
    for metric, dlq in [
        ("ApproximateNumberOfMessagesVisible", False),
        ("ApproximateNumberOfMessagesNotVisible", False),
        ("ApproximateAgeOfOldestMessage", False),
        ("ApproximateNumberOfMessagesVisible", True),
    ]:
        found = [
            e
            for e in searches
            if f'MetricName="{metric}"' in e
            and ("QueueName=dlq" in e and "NOT QueueName=dlq" not in e) == dlq
            and ("NOT QueueName=dlq" in e) != dlq
        ]
        assert found, f"no graph of {metric} for every {'DLQ' if dlq else 'queue'} of {app}"
        for expression in found:
            assert expression.startswith("SEARCH('{AWS/SQS,QueueName} "), expression
            assert f"QueueName={app} " in expression, f"{metric}: the search is not limited to {app}'s queues"
            named = set(re.findall(r"QueueName=(\w+)(?=[\s)])", expression)) - {app, "dlq"}
            assert named == queues, f"{metric}: the search names {named}, the queues are {queues}"
    functions = [f"@{name}" for name in t.consumers()]
    for metric in ("Invocations", "Errors", "Throttles", "Duration"):
        lines = {
            dims for (space, m, _), found in graphed.items() if space == "AWS/Lambda" and m == metric for dims in found
        }
        assert lines == {(("FunctionName", f),) for f in functions}, f"Lambda {metric}: {lines}"
    tasks = {dims for (space, m, _), found in graphed.items() if m == "RunningTaskCount" for dims in found}
    services = [
        (("ClusterName", "@WorkerCluster"), ("ServiceName", f"@{s}.Name")) for s in t.of_type("AWS::ECS::Service")
    ]
    assert tasks == set(services), f"running tasks graphed: {tasks}"


def check_table(t: Template) -> None:
    name, table = t.one("AWS::DynamoDB::Table")
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert {"AttributeName": "pk", "AttributeType": "S"} in table["AttributeDefinitions"]
    assert {"AttributeName": "sk", "AttributeType": "S"} in table["AttributeDefinitions"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert t.function()["Environment"]["Variables"]["SQSJOBS_TABLE"] == f"@{name}"
    assert t.container_env()["SQSJOBS_TABLE"] == f"@{name}"


def check_bucket(t: Template) -> None:
    name, bucket = t.one("AWS::S3::Bucket")
    rules = bucket.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
    assert any(r["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms") for r in rules)
    block = bucket.get("PublicAccessBlockConfiguration", {})
    for setting in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"):
        assert block.get(setting) is True, f"the payload bucket must set {setting}"
    expiring = [
        rule
        for rule in bucket.get("LifecycleConfiguration", {}).get("Rules", [])
        if rule["Status"] == "Enabled" and "ExpirationInDays" in rule and not rule.get("Prefix")
    ]
    assert expiring, "the payload bucket needs a lifecycle rule that expires objects (the backstop)"
    # A payload must outlive every message that can still point at it: the DLQ keeps them 14 days.
    assert all(int(rule["ExpirationInDays"]) > 14 for rule in expiring)
    assert t.function()["Environment"]["Variables"]["SQSJOBS_BUCKET"] == f"@{name}"
    assert t.container_env()["SQSJOBS_BUCKET"] == f"@{name}"


def check_lambda_function(t: Template) -> None:
    name, function = t.function_name(), t.function()
    assert function["Handler"] == "lambda_handlers.sqs.handler"
    assert function["Runtime"] in ("python3.11", "python3.12")
    variables = function["Environment"]["Variables"]
    for variable in (
        "SQSJOBS_APP",
        "SQSJOBS_QUEUE_PREFIX",
        "SQSJOBS_QUEUES",
        "SQSJOBS_TABLE",
        "SQSJOBS_BUCKET",
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
    ):
        assert variables.get(variable), f"{name} lacks {variable}"
    assert variables["SQSJOBS_APP"] == t.params["JobsModule"]
    known = {t.prefix() + q for q in str(variables["SQSJOBS_QUEUES"]).split(",") if q}
    assert known == {props["QueueName"] for props in t.source_queues().values()}
    # With `Policies`, SAM would add AWSLambdaSQSQueueExecutionRole: ReceiveMessage on every queue.
    assert str(function.get("Role", "")).startswith("@"), "the function must use the stack's own role"
    assert "Policies" not in function
    assert int(function["Timeout"]) > int(t.params["JobTimeout"]), "a default-timeout job must fit in one invocation"


def check_worker_container(t: Template) -> None:
    container = t.container()
    stop = int(container.get("StopTimeout", 0))
    assert WORKER_SLEEP < stop <= 120, f"StopTimeout {stop}: SIGTERM must leave running jobs time to finish"
    command = [str(part) for part in container["Command"]]
    assert command[:2] == ["work", "--queue"]
    assert int(command[command.index("--concurrency") + 1]) >= 1
    env = t.container_env()
    assert env["SQSJOBS_APP"] == t.params["JobsModule"]
    assert env["SQSJOBS_QUEUE_PREFIX"] == t.prefix()
    assert env["SQSJOBS_QUEUES"] == t.function()["Environment"]["Variables"]["SQSJOBS_QUEUES"]
    _, task = t.one("AWS::ECS::TaskDefinition")
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    assert str(task["TaskRoleArn"]).startswith("@")


def _function_arn(function: dict[str, Any]) -> str:
    """A function's ARN spelled out from its FunctionName, as a policy that cannot GetAtt it names it."""
    return f"arn:@AWS::Partition:lambda:@AWS::Region:@AWS::AccountId:function:{function['FunctionName']}"


def _role_of(arn: Any) -> str:
    return str(arn).removeprefix("@").removesuffix(".Arn")


def check_iam(t: Template) -> None:
    """No "*" action, no "*" resource, SQS/DynamoDB/S3 narrowed to this stack, consumers apart."""
    # The operators' managed policies attach to no role of the stack (an admin attaches them to people):
    # tests/unit/test_iam_operator.py holds them to the operators' calls.
    statements = [(where, roles, s) for where, roles, s in t.identity_policies() if roles]
    assert statements
    queues = t.of_type("AWS::SQS::Queue")
    queue_arns = {f"@{name}.Arn" for name in queues}
    table_arn = "@" + t.one("AWS::DynamoDB::Table")[0] + ".Arn"
    objects = t.payload_objects()
    secrets = {f"@{name}" for name in t.of_type("AWS::SecretsManager::Secret")}
    keys = {f"@{name}.Arn" for name in t.of_type("AWS::KMS::Key")}
    invokable = {_function_arn(function) for function in t.schedulers().values()}
    for where, roles, statement in statements:
        actions = [str(a) for a in _as_list(statement.get("Action"))]
        resources = [str(r) for r in _as_list(statement.get("Resource"))]
        assert "NotAction" not in statement and "NotResource" not in statement, where
        for action in actions:
            assert "*" not in action, f"{where}: wildcard action {action}"
        for resource in resources:
            assert resource != "*", f"{where}: Resource '*'"
        for action in actions:
            service = action.split(":")[0]
            if service == "sqs":
                assert action in SQS_ACTIONS, f"{where}: {action}"
                assert set(resources) <= queue_arns, f"{where}: SQS access beyond this stack's queues: {resources}"
            elif service == "dynamodb":
                assert action in DYNAMODB_ITEM_ACTIONS, f"{where}: {action}"
                assert resources == [table_arn], f"{where}: {resources}"
            elif service == "s3":
                assert action in S3_OBJECT_ACTIONS, f"{where}: {action}"
                assert resources == [objects], f"{where}: {resources}"
            elif service == "secretsmanager":
                assert action == "secretsmanager:GetSecretValue", f"{where}: {action}"
                assert resources and set(resources) <= secrets, f"{where}: secrets beyond the signing key: {resources}"
            elif service == "kms":
                assert action in ("kms:GenerateDataKey", "kms:Decrypt"), f"{where}: {action}"
                assert resources and set(resources) <= keys, f"{where}: KMS keys beyond the payload key: {resources}"
                context = statement["Condition"]["StringEquals"]["kms:EncryptionContext:sqsjobs"]
                assert context == "job-payload", f"{where}: data keys for anything but sqsjobs payloads"
            elif service == "logs":
                assert action in LOG_ACTIONS, f"{where}: {action}"
                assert all(r.endswith(":log-stream:*") and "log-group:@" in r for r in resources), resources
            elif service == "lambda":
                # EventBridge Scheduler's role, invoking the scheduler function and nothing else.
                assert action == "lambda:InvokeFunction", f"{where}: {action}"
                assert resources and set(resources) <= invokable, f"{where}: invokes more than the scheduler"
                trusted = {
                    str(s.get("Principal", {}).get("Service"))
                    for role in roles
                    for s in _statements(t.of_type("AWS::IAM::Role")[role]["AssumeRolePolicyDocument"])
                }
                assert trusted == {"scheduler.amazonaws.com"}, f"{where}: {trusted} may invoke the scheduler"
            else:
                raise AssertionError(f"{where}: unexpected action {action}")

    lambda_role = str(t.function()["Role"]).removeprefix("@").removesuffix(".Arn")
    _, task = t.one("AWS::ECS::TaskDefinition")
    task_role = str(task["TaskRoleArn"]).removeprefix("@").removesuffix(".Arn")
    worker_fed = {t.queue_named(physical) for physical in t.worker_queue_names()}
    dlq_of = {
        name: str(props["RedrivePolicy"]["deadLetterTargetArn"])[1:-4] for name, props in t.source_queues().items()
    }
    for role, own in ((lambda_role, set(t.lambda_fed())), (task_role, worker_fed)):
        granted = t.grants(role)
        assert not t.of_type("AWS::IAM::Role")[role].get("ManagedPolicyArns"), f"{role}: no managed policies"
        for queue, dlq in dlq_of.items():
            assert ("sqs:SendMessage", f"@{queue}.Arn") in granted, f"{role} cannot dispatch to {queue}"
            for action in CONSUME:
                allowed = (action, f"@{queue}.Arn") in granted
                assert allowed == (queue in own), f"{role}: {action} on {queue} should be {queue in own}"
            if queue in own:
                assert ("sqs:SendMessage", f"@{dlq}.Arn") in granted, f"{role} cannot fail jobs of {queue}"
        assert ("dynamodb:UpdateItem", table_arn) in granted
        assert ("s3:GetObject", objects) in granted


def check_signing(t: Template) -> None:
    """Signing on by default: a generated keyring secret, named to both consumers, readable by their roles only."""
    secrets = t.of_type("AWS::SecretsManager::Secret")
    roles = t.roles()
    envs = {"lambda": t.function()["Environment"]["Variables"], "worker": t.container_env()}
    if t.params["Signing"] == "off":
        assert not secrets and not any("SQSJOBS_SIGNING_KEY" in env for env in envs.values())
        assert not any(a.startswith("secretsmanager:") for r in roles.values() for a, _ in t.grants(r))
        return
    ((name, secret),) = secrets.items()
    generated = secret["GenerateSecretString"]
    assert generated["SecretStringTemplate"] == '{"current":"k1"}' and generated["GenerateStringKey"] == "k1"
    assert int(generated["PasswordLength"]) >= 64 and generated["ExcludePunctuation"] is True
    for consumer, env in envs.items():
        assert env.get("SQSJOBS_SIGNING_KEY") == f"secretsmanager:@{name}", f"{consumer} does not sign"
        readable = {
            resource for action, resource in t.grants(roles[consumer]) if action == "secretsmanager:GetSecretValue"
        }
        assert readable == {f"@{name}"}, f"{consumer} must read the signing secret, and only it: {readable}"


def check_encryption(t: Template) -> None:
    """Encryption on by default: a rotated KMS key, named to both consumers, usable for data keys by their roles."""
    keys = t.of_type("AWS::KMS::Key")
    roles = t.roles()
    envs = {"lambda": t.function()["Environment"]["Variables"], "worker": t.container_env()}
    if t.params["Encryption"] == "off":
        assert not keys and not any("SQSJOBS_KMS_KEY" in env for env in envs.values())
        assert not any(a.startswith("kms:") for r in roles.values() for a, _ in t.grants(r))
        return
    ((name, key),) = keys.items()
    assert key["EnableKeyRotation"] is True
    for consumer, env in envs.items():
        assert env.get("SQSJOBS_KMS_KEY") == f"@{name}.Arn", f"{consumer} cannot encrypt jobs"
        usable = {(a, r) for a, r in t.grants(roles[consumer]) if a.startswith("kms:")}
        assert usable == {("kms:GenerateDataKey", f"@{name}.Arn"), ("kms:Decrypt", f"@{name}.Arn")}, usable


#: The settings every sender of the app needs (the scheduler only sends); the rest are the consumers'.
SENDER_SETTINGS = (
    "SQSJOBS_APP",
    "SQSJOBS_QUEUE_PREFIX",
    "SQSJOBS_QUEUES",
    "SQSJOBS_TABLE",
    "SQSJOBS_BUCKET",
    "SQSJOBS_PAYLOAD_PREFIX",
)


def check_scheduler(t: Template) -> None:
    """Scheduler=lambda: one function runs lambda_handlers.schedule.handler, invoked every minute by EventBridge
    Scheduler with no retry (the next minute is the retry; ticks are deduplicated in the table, so it needs no
    reserved concurrency), with the consumers' package and settings. Its own role sends to every queue and
    nothing more: no receive, delete or visibility change, no DLQ, no Query, no payload read or delete, no
    Decrypt. Failing 3 minutes in a row pages. Scheduler=none: none of it."""
    schedulers = t.schedulers()
    if t.params["Scheduler"] != "lambda":
        assert not schedulers, f"Scheduler={t.params['Scheduler']} deploys a scheduler: {sorted(schedulers)}"
        assert "ScheduleFunctionName" not in t.outputs
        return
    assert len(schedulers) == 1, f"one scheduler function, found {sorted(schedulers)}"
    ((name, function),) = schedulers.items()
    assert function["Handler"] == SCHEDULER_HANDLER
    assert int(function["Timeout"]) == 60
    assert "ReservedConcurrentExecutions" not in function, "correctness must not depend on one invocation at a time"
    assert "Policies" not in function and str(function.get("Role", "")).startswith("@"), "its own role, no SAM one"
    ((event_name, event),) = function["Events"].items()
    assert event["Type"] == "ScheduleV2", f"{event_name}: EventBridge Scheduler, not {event['Type']}"
    schedule = event["Properties"]
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    assert schedule.get("State", "ENABLED") == "ENABLED"
    assert schedule.get("FlexibleTimeWindow", {"Mode": "OFF"}) == {"Mode": "OFF"}, "invoked each minute, on time"
    # No retries: the next minute's invocation is the retry (Lambda would retry an async call twice by default).
    assert schedule.get("RetryPolicy", {}).get("MaximumRetryAttempts") == 0, "EventBridge Scheduler retries"
    assert function.get("EventInvokeConfig", {}).get("MaximumRetryAttempts") == 0, "Lambda retries async calls"
    # Schedules share the account's default group: the name must be the app's, not a logical ID.
    assert t.params["AppName"] in str(schedule["Name"])

    # The consumers' package and settings.
    env = {key: str(value) for key, value in function["Environment"]["Variables"].items()}
    for setting in SENDER_SETTINGS:
        assert env.get(setting), f"{name} lacks {setting}"
    assert env["SQSJOBS_APP"] == t.params["JobsModule"]
    if t.consumers():
        consumer = t.function()
        theirs = {key: str(value) for key, value in consumer["Environment"]["Variables"].items()}
        differ = sorted(set(env.items()) ^ set(theirs.items()))
        assert env == theirs, f"{name}: settings differ from the consumer's: {differ}"
        for prop in ("CodeUri", "Runtime", "Architectures", "Layers", "MemorySize"):
            assert function.get(prop) == consumer.get(prop), f"{name}: {prop} differs from the consumer's"
    if t.of_type("AWS::ECS::TaskDefinition"):
        container = t.container_env()
        for key, value in env.items():
            if key.startswith("SQSJOBS_"):
                assert container.get(key) == value, f"{name}: {key}={value}, the poller has {container.get(key)}"
    known = {env["SQSJOBS_QUEUE_PREFIX"] + q for q in env["SQSJOBS_QUEUES"].split(",") if q}
    assert known == {props["QueueName"] for props in t.source_queues().values()}

    # Its role: the sending side only.
    role = _role_of(function["Role"])
    roles = t.of_type("AWS::IAM::Role")
    consumer_roles = {_role_of(f["Role"]) for f in t.consumers().values()}
    consumer_roles |= {_role_of(task["TaskRoleArn"]) for task in t.of_type("AWS::ECS::TaskDefinition").values()}
    assert role in roles and role not in consumer_roles, f"{name} must run with its own role, not {role}"
    assert not roles[role].get("ManagedPolicyArns"), f"{role}: no managed policies"
    granted = t.grants(role)
    table = "@" + t.one("AWS::DynamoDB::Table")[0] + ".Arn"
    objects = "@" + t.one("AWS::S3::Bucket")[0] + ".Arn/" + env["SQSJOBS_PAYLOAD_PREFIX"] + "*"
    for queue in t.source_queues():
        assert ("sqs:SendMessage", f"@{queue}.Arn") in granted, f"{role} cannot dispatch to {queue}"
    sqs = {(a, r) for a, r in granted if a.startswith("sqs:")}
    consuming = {(a, r) for a, r in sqs if a in CONSUME}
    assert not consuming, f"{role} may consume: {sorted(consuming)}"
    dlqs = {f"@{dlq}.Arn" for dlq in t.dlq_names()}
    assert not {r for _, r in sqs} & dlqs, f"{role} may reach a DLQ"
    assert {a for a, _ in sqs} <= {"sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"}, sqs
    others = {(a, r) for a, r in granted if not a.startswith(("sqs:", "logs:"))}
    expected = {(a, table) for a in DYNAMODB_ITEM_ACTIONS - {"dynamodb:Query"}} | {("s3:PutObject", objects)}
    secrets = t.of_type("AWS::SecretsManager::Secret")
    if t.params["Signing"] == "on":
        ((secret, _),) = secrets.items()
        assert env.get("SQSJOBS_SIGNING_KEY") == f"secretsmanager:@{secret}", f"{name} does not sign"
        expected.add(("secretsmanager:GetSecretValue", f"@{secret}"))
    else:
        assert "SQSJOBS_SIGNING_KEY" not in env
    if t.params["Encryption"] == "on":
        ((key, _),) = t.of_type("AWS::KMS::Key").items()
        assert env.get("SQSJOBS_KMS_KEY") == f"@{key}.Arn", f"{name} cannot seal encrypted jobs"
        expected.add(("kms:GenerateDataKey", f"@{key}.Arn"))
    else:
        assert "SQSJOBS_KMS_KEY" not in env
    assert others == expected, f"{role}: granted {sorted(others - expected)} too, lacks {sorted(expected - others)}"
    log_group = str(function["LoggingConfig"]["LogGroup"])
    logs = {(a, r) for a, r in granted if a.startswith("logs:")}
    assert {a for a, _ in logs} == LOG_ACTIONS and all(f"log-group:{log_group}:" in r for _, r in logs), logs
    groups = t.of_type("AWS::Logs::LogGroup")
    assert groups[log_group.removeprefix("@")]["RetentionInDays"] == t.params["LogRetentionDays"]

    # EventBridge Scheduler's role may invoke this function and nothing else.
    invoker = _role_of(schedule["RoleArn"])
    trust = _statements(roles[invoker]["AssumeRolePolicyDocument"])
    assert [s["Principal"] for s in trust] == [{"Service": "scheduler.amazonaws.com"}], invoker
    assert t.grants(invoker) == {("lambda:InvokeFunction", _function_arn(function))}, invoker

    # Failing every minute for 3 minutes pages (nothing scheduled is dispatched); one failed minute does not.
    errors = {
        alarm_name: alarm
        for alarm_name, alarm in t.of_type("AWS::CloudWatch::Alarm").items()
        if alarm.get("Namespace") == "AWS/Lambda"
        and alarm.get("MetricName") == "Errors"
        and alarm.get("Dimensions") == [{"Name": "FunctionName", "Value": f"@{name}"}]
    }
    assert len(errors) == 1, f"one alarm on the scheduler's errors, found {sorted(errors)}"
    ((alarm_name, alarm),) = errors.items()
    assert _actions(alarm) == {PAGING}, f"{alarm_name}: scheduled jobs not dispatched for minutes pages"
    assert alarm["Statistic"] == "Sum" and int(alarm["Period"]) == 60, alarm_name
    assert int(alarm["EvaluationPeriods"]) == int(alarm["DatapointsToAlarm"]) == 3, alarm_name
    assert float(alarm["Threshold"]) == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold", alarm_name
    assert alarm.get("TreatMissingData") == "notBreaching", alarm_name
    assert t.outputs["ScheduleFunctionName"]["Value"] == {"Ref": name}


CHECKS: list[Callable[[Template], None]] = [
    check_queues_and_redrive,
    check_failed_jobs_store,
    check_event_source_mappings,
    check_lambda_visibility_timeout,
    check_consumers,
    check_alarms,
    check_failure_rate_alarms,
    check_consumer_alarms,
    check_service_alarms,
    check_dashboard,
    check_trust_policies,
    check_table,
    check_bucket,
    check_lambda_function,
    check_worker_container,
    check_iam,
    check_signing,
    check_encryption,
    check_scheduler,
]


# ------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def template() -> Template:
    return build()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_template(template: Template, check: Callable[[Template], None]) -> None:
    check(template)


def test_only_the_jobs_module_must_be_given() -> None:
    assert {name for name, spec in RAW["Parameters"].items() if "Default" not in spec} == set(REQUIRED)


def test_defaults_put_high_and_default_on_the_poller_in_priority_order(template: Template) -> None:
    assert template.worker_queue_names() == ["sqsjobs-high", "sqsjobs-default"]
    assert {template.of_type("AWS::SQS::Queue")[q]["QueueName"] for q in template.lambda_fed()} == {"sqsjobs-lambda"}


@pytest.mark.parametrize("timeout", RAW["Parameters"]["LambdaTimeout"]["AllowedValues"])
def test_every_allowed_function_timeout_keeps_six_times_the_visibility(timeout: str) -> None:
    check_lambda_visibility_timeout(build(LambdaTimeout=timeout))


@pytest.mark.parametrize("window", [0, 1, 300])
@pytest.mark.parametrize("timeout", RAW["Parameters"]["LambdaTimeout"]["AllowedValues"])
def test_the_batching_window_counts_into_the_visibility(timeout: str, window: int) -> None:
    check_lambda_visibility_timeout(build(LambdaTimeout=timeout, LambdaBatchingWindow=window))


def test_a_visibility_without_the_window_is_caught() -> None:
    raw = deepcopy(RAW)
    _lambda("Queue${Queue}")(raw)["VisibilityTimeout"] = {
        "Fn::FindInMap": ["LambdaTimeouts", {"Ref": "LambdaTimeout"}, "QueueVisibilityTimeout"]
    }
    check_lambda_visibility_timeout(build(raw))
    with pytest.raises(AssertionError, match="batching window"):
        check_lambda_visibility_timeout(build(raw, LambdaBatchingWindow=30))


def test_the_longest_allowed_source_retention_keeps_the_dlqs_longer() -> None:
    longest = RAW["Parameters"]["QueueRetentionPeriod"]["MaxValue"]
    t = build(QueueRetentionPeriod=longest, DeadLetterAgeThreshold=3600)
    check_queues_and_redrive(t)
    check_failed_jobs_store(t)
    check_alarms(t)


def test_a_dlq_age_notice_that_comes_after_expiry_is_caught() -> None:
    with pytest.raises(AssertionError, match="may expire"):
        check_alarms(build(QueueRetentionPeriod=RAW["Parameters"]["QueueRetentionPeriod"]["MaxValue"]))


@pytest.mark.parametrize(("threshold", "least"), [(0.2, 10), (0.5, 2), (0.05, 50)])
def test_the_failure_rate_alarm_holds_for_other_settings(threshold: float, least: int) -> None:
    check_failure_rate_alarms(build(FailureRateThreshold=threshold, FailureRateMinJobs=least))


def test_metric_math_reads_what_the_alarms_need() -> None:
    assert metric_math("IF(FILL(a, 0) + b >= 3, b / (FILL(a, 0) + b), 0)", {"a": None, "b": 3}) == 1.0
    assert metric_math("IF(FILL(a, 0) + b >= 3, b / (FILL(a, 0) + b), 0)", {"a": None, "b": 2}) == 0.0
    assert metric_math("a + b", {"a": 1, "b": None}) is None
    assert metric_math("IF(v > 0 AND (FILL(x, 0) == 0 OR y == 0), 1, 0)", {"v": 2, "x": 5, "y": 0}) == 1.0
    assert metric_math("desired - running", {"desired": 2, "running": 3}) == -1.0


def test_other_queue_lists_are_wired_the_same_way() -> None:
    t = build(AppName="shop", LambdaQueues="emails,webhooks", WorkerQueues="high,default,reports")
    for check in CHECKS:
        check(t)
    assert t.worker_queue_names() == ["shop-high", "shop-default", "shop-reports"]
    assert len(t.lambda_fed()) == 2


def test_signing_can_be_turned_off_explicitly() -> None:
    t = build(Signing="off")
    for check in CHECKS:
        check(t)
    assert "SigningSecretArn" not in t.outputs
    assert "SQSJOBS_SIGNING_MAX_AGE" not in t.container_env(), "a max age without a key is a config error"
    assert "SQSJOBS_SIGNING_MAX_AGE" not in t.function()["Environment"]["Variables"]


def test_signing_has_a_max_age_by_default(template: Template) -> None:
    """Without one, a signed message captured once can be sent again, and run, for ever (docs/security.md)."""
    assert template.container_env()["SQSJOBS_SIGNING_MAX_AGE"] == "86400"
    assert str(template.function()["Environment"]["Variables"]["SQSJOBS_SIGNING_MAX_AGE"]) == "86400"


def test_encryption_can_be_turned_off_explicitly() -> None:
    t = build(Encryption="off")
    for check in CHECKS:
        check(t)
    assert "PayloadKeyArn" not in t.outputs


def test_the_payload_prefix_is_the_one_the_code_uses_by_default(template: Template) -> None:
    assert template.container_env()["SQSJOBS_PAYLOAD_PREFIX"] == "sqsjobs/"
    assert template.payload_objects() == "@PayloadBucket.Arn/sqsjobs/*"


def test_a_queue_in_both_lists_is_refused() -> None:
    with pytest.raises(AssertionError, match="twice"):
        build(LambdaQueues="high", WorkerQueues="high,default")


def test_an_empty_list_leaves_that_consumer_out() -> None:
    lambda_only = build(WorkerQueues="")
    assert not lambda_only.of_type("AWS::ECS::Service") and lambda_only.lambda_fed()
    ecs_only = build(LambdaQueues="")
    assert not ecs_only.of_type("AWS::Serverless::Function") and ecs_only.of_type("AWS::ECS::Service")
    assert {p["QueueName"] for p in ecs_only.source_queues().values()} == {"sqsjobs-high", "sqsjobs-default"}
    # Monitoring follows: no alarm or graph on a consumer that is not there, all of them on the one that is.
    for t in (lambda_only, ecs_only):
        for check in stack_checks():
            check(t)


def _fragment(raw: dict[str, Any], loop: str, key: str) -> dict[str, Any]:
    return raw["Resources"][f"Fn::ForEach::{loop}"][2][key]  # type: ignore[no-any-return]


def _props(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return raw["Resources"][name]["Properties"]  # type: ignore[no-any-return]


def _set(path: Callable[[dict[str, Any]], dict[str, Any]], key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        path(raw)[key] = value

    return mutate


def _drop(path: Callable[[dict[str, Any]], dict[str, Any]], key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        del path(raw)[key]

    return mutate


def _lambda(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda raw: _fragment(raw, "LambdaFedQueues", key)["Properties"]


def _worker(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda raw: _fragment(raw, "WorkerFedQueues", key)["Properties"]


def _role_statement(role: str, policy: int, statement: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda raw: _props(raw, role)["Policies"][policy]["PolicyDocument"]["Statement"][statement]


def _lambda_consume_statement(raw: dict[str, Any]) -> dict[str, Any]:
    return _lambda("ConsumePolicy${Queue}")(raw)["PolicyDocument"]["Statement"][0]  # type: ignore[no-any-return]


def _one_dlq_for_all(raw: dict[str, Any]) -> None:
    _worker("Queue${Queue}")(raw)["RedrivePolicy"]["deadLetterTargetArn"] = {
        "Fn::GetAtt": ["DeadLetterQueuehigh", "Arn"]
    }


def _without_signing_key_in_the_container(raw: dict[str, Any]) -> None:
    container = _props(raw, "WorkerTaskDefinition")["ContainerDefinitions"][0]
    container["Environment"] = [e for e in container["Environment"] if "Fn::If" not in e]


def _unencrypted(raw: dict[str, Any]) -> None:
    del _props(raw, "PayloadBucket")["BucketEncryption"]


def _metrics(loop: str, key: str, index: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda raw: _fragment(raw, loop, key)["Properties"]["Metrics"][index]


def _dashboard_variables(raw: dict[str, Any]) -> dict[str, Any]:
    return _props(raw, "Dashboard")["DashboardBody"]["Fn::Sub"][1]  # type: ignore[no-any-return]


def _dashboard_text(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        body = _props(raw, "Dashboard")["DashboardBody"]["Fn::Sub"]
        assert body[0].count(old) == 1, old
        body[0] = body[0].replace(old, new)

    return mutate


def _off(resource: str) -> Callable[[dict[str, Any]], None]:
    """Leaves `resource` out of the stack (a condition that is false with the defaults)."""

    def mutate(raw: dict[str, Any]) -> None:
        raw["Resources"][resource]["Condition"] = "HasAlarmEmail"

    return mutate


def _scheduling(mutate: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """`mutate`, in a template whose Scheduler defaults to lambda (the breakages build with the defaults)."""

    def both(raw: dict[str, Any]) -> None:
        raw["Parameters"]["Scheduler"]["Default"] = "lambda"
        mutate(raw)

    return both


def _schedule_event(raw: dict[str, Any]) -> dict[str, Any]:
    return _props(raw, "ScheduleFunction")["Events"]["EveryMinute"]["Properties"]  # type: ignore[no-any-return]


def _schedule_statement(policy: int, statement: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda raw: _props(raw, "ScheduleRole")["Policies"][policy]["PolicyDocument"]["Statement"][statement]


def _also_for_the_scheduler(loop: str, key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        _fragment(raw, loop, key)["Properties"]["Roles"].append({"Ref": "ScheduleRole"})

    return mutate


def _not_for_the_scheduler(loop: str, key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        roles = _fragment(raw, loop, key)["Properties"]["Roles"]
        roles[:] = [r for r in roles if "ScheduleRole" not in repr(r)]

    return mutate


BREAKAGES: list[tuple[str, Callable[[Template], None], Callable[[dict[str, Any]], None]]] = [
    (
        "maxReceiveCount equal to tries",
        check_queues_and_redrive,
        lambda raw: _worker("Queue${Queue}")(raw)["RedrivePolicy"].update(maxReceiveCount={"Ref": "MaxTries"}),
    ),
    ("a queue without a DLQ", check_queues_and_redrive, _drop(_lambda("Queue${Queue}"), "RedrivePolicy")),
    ("DLQs shared between queues", check_queues_and_redrive, _one_dlq_for_all),
    (
        "DLQ keeps 4 days",
        check_queues_and_redrive,
        _set(_lambda("DeadLetterQueue${Queue}"), "MessageRetentionPeriod", 345600),
    ),
    (
        "no ReportBatchItemFailures",
        check_event_source_mappings,
        _drop(_lambda("EventSourceMapping${Queue}"), "FunctionResponseTypes"),
    ),
    (
        "no MaximumConcurrency",
        check_event_source_mappings,
        _drop(_lambda("EventSourceMapping${Queue}"), "ScalingConfig"),
    ),
    (
        "mapping created before its permissions",
        check_event_source_mappings,
        _drop(_lambda("EventSourceMapping${Queue}"), "Tags"),
    ),
    (
        "Lambda queue with the poller's visibility",
        check_lambda_visibility_timeout,
        _set(_lambda("Queue${Queue}"), "VisibilityTimeout", {"Ref": "WorkerVisibilityTimeout"}),
    ),
    (
        "a wrong entry in the visibility table",
        check_lambda_visibility_timeout,
        lambda raw: raw["Mappings"]["LambdaTimeouts"]["300"].update(QueueVisibilityTimeout=900),
    ),
    (
        "the poller also reading a Lambda queue",
        check_consumers,
        # The command without WorkerPools: `work --queue <queues> --concurrency N`.
        lambda raw: _props(raw, "WorkerTaskDefinition")["ContainerDefinitions"][0]["Command"]["Fn::If"][2].__setitem__(
            2, "high,default,lambda"
        ),
    ),
    (
        "no backlog-per-task scaling",
        check_consumers,
        lambda raw: _fragment(raw, "WorkerFedQueues", "ScalingPolicy${Queue}").update(Condition="HasAlarmEmail"),
    ),
    (
        "DLQ deleted with the stack",
        check_failed_jobs_store,
        lambda raw: _fragment(raw, "WorkerFedQueues", "DeadLetterQueue${Queue}").pop("DeletionPolicy"),
    ),
    (
        "table lost on replacement",
        check_failed_jobs_store,
        lambda raw: raw["Resources"]["Table"].pop("UpdateReplacePolicy"),
    ),
    (
        "log group deleted with the stack",
        check_failed_jobs_store,
        lambda raw: raw["Resources"]["LambdaLogGroup"].pop("DeletionPolicy"),
    ),
    (
        "any queue may use a DLQ",
        check_failed_jobs_store,
        _set(_lambda("DeadLetterQueue${Queue}"), "RedriveAllowPolicy", {"redrivePermission": "allowAll"}),
    ),
    (
        "a DLQ that allows another queue",
        check_failed_jobs_store,
        lambda raw: _worker("DeadLetterQueue${Queue}")(raw)["RedriveAllowPolicy"].update(
            sourceQueueArns=[{"Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${AppName}-x"}]
        ),
    ),
    (
        "source retention may reach the DLQ's",
        check_failed_jobs_store,
        lambda raw: raw["Parameters"]["QueueRetentionPeriod"].update(MaxValue=FOURTEEN_DAYS),
    ),
    (
        "source retention not from the parameter",
        check_failed_jobs_store,
        _set(_worker("Queue${Queue}"), "MessageRetentionPeriod", 345600),
    ),
    ("DLQ alarm at 5 messages", check_alarms, _set(_worker("DeadLetterAlarm${Queue}"), "Threshold", 5)),
    (
        "a failed job pages",
        check_alarms,
        lambda raw: _worker("DeadLetterAlarm${Queue}")(raw).update(
            AlarmActions=[{"Ref": "AlarmTopic"}], OKActions=[{"Ref": "AlarmTopic"}]
        ),
    ),
    (
        "an alarm on both topics",
        check_alarms,
        _set(_lambda("OldestMessageAlarm${Queue}"), "AlarmActions", [{"Ref": "AlarmTopic"}, {"Ref": "NoticeTopic"}]),
    ),
    ("a fixed paging threshold", check_alarms, _set(_lambda("QueueDepthAlarm${Queue}"), "Threshold", 1000)),
    (
        "no notice before DLQ messages expire",
        check_alarms,
        lambda raw: _fragment(raw, "WorkerFedQueues", "DeadLetterAgeAlarm${Queue}").update(Condition="HasAlarmEmail"),
    ),
    (
        "the DLQ age notice after a redriven message expired",
        check_alarms,
        lambda raw: raw["Parameters"]["DeadLetterAgeThreshold"].update(Default=1036800),
    ),
    (
        "no depth alarm",
        check_alarms,
        lambda raw: _fragment(raw, "LambdaFedQueues", "QueueDepthAlarm${Queue}").update(Condition="HasAlarmEmail"),
    ),
    (
        "failure rate without a minimum volume",
        check_failure_rate_alarms,
        lambda raw: _metrics("WorkerFedQueues", "FailureRateAlarm${Queue}", 2)(raw).update(
            Expression="FILL(failed, 0) / (FILL(processed, 0) + FILL(failed, 0))"
        ),
    ),
    (
        "failure rate blind when nothing was processed",
        check_failure_rate_alarms,
        lambda raw: _metrics("LambdaFedQueues", "FailureRateAlarm${Queue}", 2)(raw).update(
            Expression={"Fn::Sub": "IF(processed + failed >= ${FailureRateMinJobs}, failed / (processed + failed), 0)"}
        ),
    ),
    (
        "failure rate on the physical queue name",
        check_failure_rate_alarms,
        lambda raw: _metrics("WorkerFedQueues", "FailureRateAlarm${Queue}", 1)(raw)["MetricStat"]["Metric"].update(
            Dimensions=[{"Name": "queue", "Value": {"Fn::Sub": "${AppName}-${Queue}"}}]
        ),
    ),
    (
        "failure rate over one minute",
        check_failure_rate_alarms,
        lambda raw: _metrics("WorkerFedQueues", "FailureRateAlarm${Queue}", 0)(raw)["MetricStat"].update(Period=60),
    ),
    (
        "no worker_alive means nothing",
        check_consumer_alarms,
        lambda raw: _metrics("WorkerFedQueues", "NoConsumerAlarm${Queue}", 2)(raw).update(
            Expression="IF(visible > 0 AND alive == 0, 1, 0)"
        ),
    ),
    (
        "a poller that emits no metrics",
        check_consumer_alarms,
        lambda raw: _props(raw, "WorkerTaskDefinition")["ContainerDefinitions"][0]["Environment"].remove(
            {"Name": "SQSJOBS_METRICS", "Value": "emf"}
        ),
    ),
    (
        "worker_alive of another queue",
        check_consumer_alarms,
        lambda raw: _metrics("WorkerFedQueues", "NoConsumerAlarm${Queue}", 1)(raw)["MetricStat"]["Metric"].update(
            Dimensions=[{"Name": "queue", "Value": "default"}]
        ),
    ),
    (
        "a Lambda backlog that only pages when received",
        check_consumer_alarms,
        lambda raw: _metrics("LambdaFedQueues", "NoConsumerAlarm${Queue}", 3)(raw).update(
            Expression="IF(visible > 0 AND FILL(received, 0) == 0, 1, 0)"
        ),
    ),
    ("no throttles alarm", check_service_alarms, _off("LambdaThrottlesAlarm")),
    (
        "tasks alarm that pages on deployments",
        check_service_alarms,
        lambda raw: _props(raw, "WorkerTasksAlarm")["Metrics"][2].update(Expression="running - desired"),
    ),
    (
        "a Lambda role any account's function may assume",
        check_trust_policies,
        lambda raw: _props(raw, "LambdaRole")["AssumeRolePolicyDocument"]["Statement"][0].pop("Condition"),
    ),
    (
        "an execution role any account's task may assume",
        check_trust_policies,
        lambda raw: _props(raw, "WorkerExecutionRole")["AssumeRolePolicyDocument"]["Statement"][0].pop("Condition"),
    ),
    (
        "dashboard without the Lambda queues",
        check_dashboard,
        lambda raw: _dashboard_variables(raw).update(QueueLines={"Fn::Join": ['"],["...","', {"Ref": "WorkerQueues"}]}),
    ),
    (
        "dashboard without runtime p95",
        check_dashboard,
        _dashboard_text(
            '"title": "Runtime p95 (ms)", "region": "${AWS::Region}", "view": "timeSeries", "stat": "p95"',
            '"title": "Runtime p95 (ms)", "region": "${AWS::Region}", "view": "timeSeries", "stat": "p90"',
        ),
    ),
    (
        "dashboard DLQ graph of every app",
        check_dashboard,
        _dashboard_text("QueueName=${AppName} (QueueName=${SearchTerms}) QueueName=dlq", "QueueName=dlq"),
    ),
    (
        "dashboard without the function",
        check_dashboard,
        lambda raw: _dashboard_variables(raw).update(LambdaWidgets=""),
    ),
    (
        "no oldest-message alarm",
        check_alarms,
        lambda raw: _fragment(raw, "LambdaFedQueues", "OldestMessageAlarm${Queue}").update(Condition="HasAlarmEmail"),
    ),
    ("alarm without an action", check_alarms, _drop(_lambda("DeadLetterAlarm${Queue}"), "AlarmActions")),
    (
        "TTL on the wrong attribute",
        check_table,
        _set(lambda raw: _props(raw, "Table"), "TimeToLiveSpecification", {"AttributeName": "ttl", "Enabled": True}),
    ),
    ("provisioned table", check_table, _set(lambda raw: _props(raw, "Table"), "BillingMode", "PROVISIONED")),
    ("unencrypted bucket", check_bucket, _unencrypted),
    ("no lifecycle backstop", check_bucket, _drop(lambda raw: _props(raw, "PayloadBucket"), "LifecycleConfiguration")),
    (
        "public bucket",
        check_bucket,
        _set(lambda raw: _props(raw, "PayloadBucket")["PublicAccessBlockConfiguration"], "BlockPublicPolicy", False),
    ),
    ("wrong handler", check_lambda_function, _set(lambda raw: _props(raw, "JobsFunction"), "Handler", "app.handler")),
    (
        "no SQSJOBS_APP in Lambda",
        check_lambda_function,
        _drop(lambda raw: _props(raw, "JobsFunction")["Environment"]["Variables"], "SQSJOBS_APP"),
    ),
    (
        "no stopTimeout",
        check_worker_container,
        _drop(lambda raw: _props(raw, "WorkerTaskDefinition")["ContainerDefinitions"][0], "StopTimeout"),
    ),
    ("sqs:* action", check_iam, lambda raw: _lambda_consume_statement(raw).update(Action="sqs:*")),
    ("Resource *", check_iam, _set(_role_statement("WorkerTaskRole", 0, 0), "Resource", "*")),
    ("dynamodb:* action", check_iam, _set(_role_statement("LambdaRole", 1, 0), "Action", "dynamodb:*")),
    (
        "Lambda consuming the poller's queues",
        check_iam,
        lambda raw: _fragment(raw, "WorkerFedQueues", "ConsumePolicy${Queue}")["Properties"].update(
            Roles=[{"Ref": "WorkerTaskRole"}, {"Ref": "LambdaRole"}]
        ),
    ),
    (
        "S3 on the whole bucket",
        check_iam,
        _set(_role_statement("WorkerTaskRole", 0, 1), "Resource", {"Fn::Sub": "${PayloadBucket.Arn}/*"}),
    ),
    (
        "a DynamoDB action no code calls",
        check_iam,
        lambda raw: _role_statement("LambdaRole", 1, 0)(raw)["Action"].append("dynamodb:BatchWriteItem"),
    ),
    (
        "every secret readable",
        check_iam,
        lambda raw: _props(raw, "WorkerTaskRole")["Policies"][1]["Fn::If"][1]["PolicyDocument"]["Statement"][0].update(
            Resource={"Fn::Sub": "arn:aws:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:*"}
        ),
    ),
    (
        "no signing key in the container",
        check_signing,
        _without_signing_key_in_the_container,
    ),
    (
        "a short signing key",
        check_signing,
        lambda raw: _props(raw, "SigningSecret")["GenerateSecretString"].update(PasswordLength=16),
    ),
    (
        "the function cannot read the signing secret",
        check_signing,
        lambda raw: _props(raw, "LambdaRole")["Policies"].pop(-2),
    ),
    (
        "the worker cannot decrypt payloads",
        check_encryption,
        lambda raw: _props(raw, "WorkerTaskRole")["Policies"].pop(),
    ),
    (
        "every KMS key usable",
        check_iam,
        lambda raw: _props(raw, "LambdaRole")["Policies"][-1]["Fn::If"][1]["PolicyDocument"]["Statement"][0].update(
            Resource={"Fn::Sub": "arn:aws:kms:${AWS::Region}:${AWS::AccountId}:key/*"}
        ),
    ),
    (
        "managed policy on the task role",
        check_iam,
        _set(
            lambda raw: _props(raw, "WorkerTaskRole"),
            "ManagedPolicyArns",
            ["arn:aws:iam::aws:policy/AdministratorAccess"],
        ),
    ),
    (
        "a scheduler deployed with Scheduler=none",
        check_scheduler,
        lambda raw: raw["Resources"]["ScheduleFunction"].update(Condition="HasQueues"),
    ),
    (
        "the scheduler running the consumer's handler",
        check_scheduler,
        _scheduling(_set(lambda raw: _props(raw, "ScheduleFunction"), "Handler", "lambda_handlers.sqs.handler")),
    ),
    (
        "the scheduler every 5 minutes",
        check_scheduler,
        _scheduling(_set(_schedule_event, "ScheduleExpression", "rate(5 minutes)")),
    ),
    (
        "the scheduler on a scheduled EventBridge rule",
        check_scheduler,
        _scheduling(
            lambda raw: _props(raw, "ScheduleFunction")["Events"].update(
                EveryMinute={"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)"}}
            )
        ),
    ),
    (
        "the scheduler retried by Lambda",
        check_scheduler,
        _scheduling(_drop(lambda raw: _props(raw, "ScheduleFunction"), "EventInvokeConfig")),
    ),
    (
        "the scheduler held to one invocation at a time",
        check_scheduler,
        _scheduling(_set(lambda raw: _props(raw, "ScheduleFunction"), "ReservedConcurrentExecutions", 1)),
    ),
    (
        "the scheduler without the signing key",
        check_scheduler,
        _scheduling(
            _drop(lambda raw: _props(raw, "ScheduleFunction")["Environment"]["Variables"], "SQSJOBS_SIGNING_KEY")
        ),
    ),
    (
        "the scheduler running with the consumer's role",
        check_scheduler,
        _scheduling(_set(lambda raw: _props(raw, "ScheduleFunction"), "Role", {"Fn::GetAtt": ["LambdaRole", "Arn"]})),
    ),
    (
        "the scheduler may receive from a Lambda queue",
        check_scheduler,
        _scheduling(_also_for_the_scheduler("LambdaFedQueues", "ConsumePolicy${Queue}")),
    ),
    (
        "the scheduler cannot send to the poller's queues",
        check_scheduler,
        _scheduling(_not_for_the_scheduler("WorkerFedQueues", "DispatchPolicy${Queue}")),
    ),
    (
        "the scheduler may query the table",
        check_scheduler,
        _scheduling(lambda raw: _schedule_statement(1, 0)(raw)["Action"].append("dynamodb:Query")),
    ),
    (
        "the scheduler may read payloads",
        check_scheduler,
        _scheduling(_set(_schedule_statement(1, 1), "Action", ["s3:PutObject", "s3:GetObject"])),
    ),
    (
        "the scheduler may decrypt payloads",
        check_scheduler,
        _scheduling(
            lambda raw: _props(raw, "ScheduleRole")["Policies"][-1]["Fn::If"][1]["PolicyDocument"]["Statement"][
                0
            ].update(Action=["kms:GenerateDataKey", "kms:Decrypt"])
        ),
    ),
    (
        "the scheduler's errors on the notice topic",
        check_scheduler,
        _scheduling(
            lambda raw: _props(raw, "ScheduleErrorsAlarm").update(
                AlarmActions=[{"Ref": "NoticeTopic"}], OKActions=[{"Ref": "NoticeTopic"}]
            )
        ),
    ),
    (
        "one failed scheduler minute pages",
        check_alarms,
        _scheduling(_set(lambda raw: _props(raw, "ScheduleErrorsAlarm"), "DatapointsToAlarm", 1)),
    ),
    (
        "EventBridge Scheduler may invoke every function",
        check_iam,
        _scheduling(
            lambda raw: _props(raw, "ScheduleInvokeRole")["Policies"][0]["PolicyDocument"]["Statement"][0].update(
                Resource={"Fn::Sub": "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:*"}
            )
        ),
    ),
    (
        "a scheduler invoke role any account's schedule may assume",
        check_trust_policies,
        _scheduling(
            lambda raw: _props(raw, "ScheduleInvokeRole")["AssumeRolePolicyDocument"]["Statement"][0].pop("Condition")
        ),
    ),
]


@pytest.mark.parametrize(("check", "mutate"), [b[1:] for b in BREAKAGES], ids=[b[0] for b in BREAKAGES])
def test_check_catches_a_broken_template(
    check: Callable[[Template], None], mutate: Callable[[dict[str, Any]], None]
) -> None:
    raw = deepcopy(RAW)
    mutate(raw)
    with pytest.raises(AssertionError):
        check(build(raw))


def test_every_check_is_exercised_by_a_breakage() -> None:
    assert {b[1] for b in BREAKAGES} == set(CHECKS)


def test_cfn_lint_finds_nothing_in_any_template() -> None:
    """cfn-lint (a dev dependency) validates resource schemas, references, the ForEach expansion and the
    SAM resources. Errors and warnings both fail: the templates have none, and a warning from cfn-lint is
    almost always a real mistake (an unused condition, a property that does nothing)."""
    from cfnlint.api import lint_file

    templates = sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
    assert TEMPLATE in templates
    problems = [
        f"{m.filename}:{m.linenumber} {m.rule.id} {m.message}"
        for path in templates
        for m in lint_file(path)
        if m.rule.severity in ("error", "warning")
    ]
    assert problems == []


def test_cfn_lint_reports_a_broken_template(tmp_path: Path) -> None:
    from cfnlint.api import lint_file

    text = TEMPLATE.read_text()
    good = "FunctionResponseTypes: [ReportBatchItemFailures]"
    assert text.count(good) == 1
    broken = tmp_path / "template.yaml"
    broken.write_text(text.replace(good, "FunctionResponseTypes: [ReportEveryFailure]"))
    assert any(m.rule.severity == "error" for m in lint_file(broken))


def test_worker_pools_replace_the_single_poller_and_reach_the_container_as_sqsjobs_pools() -> None:
    from sqsjobs.worker.pools import parse_pools

    pools = '{"high": {"queues": ["high"], "concurrency": 10, "timeout": 30}, "bulk": {"queues": ["default"]}}'
    t = build(WorkerPools=pools)
    assert [str(part) for part in t.container()["Command"]] == ["work"]
    assert t.container_env()["SQSJOBS_POOLS"] == pools
    assert sorted(parse_pools(t.container_env()["SQSJOBS_POOLS"])) == ["bulk", "high"]
    plain = build()
    assert "SQSJOBS_POOLS" not in plain.container_env()
    assert [str(part) for part in plain.container()["Command"]][:2] == ["work", "--queue"]


def test_the_function_may_send_to_the_queues_it_reads() -> None:
    """Delay hops, hand-backs and chain links re-enter the function on purpose: Lambda's recursive-loop
    detection would drop such a job after 16 round trips, unannounced."""
    assert build().function()["RecursiveLoop"] == "Allow"


# ----------------------------------------------------------------------------- scheduler

SCHEDULER_RESOURCES = {
    "ScheduleLogGroup",
    "ScheduleRole",
    "ScheduleInvokeRole",
    "ScheduleFunction",
    "ScheduleErrorsAlarm",
}


def test_the_scheduler_exists_only_with_scheduler_lambda() -> None:
    assert RAW["Parameters"]["Scheduler"]["Default"] == "none"
    assert set(RAW["Parameters"]["Scheduler"]["AllowedValues"]) == {"lambda", "none"}
    off, on = build(), build(Scheduler="lambda")
    assert not off.schedulers() and not SCHEDULER_RESOURCES & set(off.resources)
    assert "ScheduleFunctionName" not in off.outputs
    assert list(on.schedulers()) == ["ScheduleFunction"]
    assert set(on.resources) - set(off.resources) == SCHEDULER_RESOURCES
    assert "ScheduleFunctionName" in on.outputs
    # The consumers are the same either way.
    assert on.consumers() == off.consumers() and on.function_name() == "JobsFunction"


def test_the_scheduler_runs_its_handler_every_minute_on_eventbridge_scheduler() -> None:
    function = build(Scheduler="lambda").schedulers()["ScheduleFunction"]
    assert function["Handler"] == "lambda_handlers.schedule.handler"
    assert function["FunctionName"] == "sqsjobs-sqsjobs-schedule"
    (event,) = function["Events"].values()
    assert event["Type"] == "ScheduleV2"
    assert event["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    assert event["Properties"]["Name"] == "sqsjobs-sqsjobs-schedule"


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"Signing": "off"},
        {"Encryption": "off"},
        {"AppName": "shop", "LambdaQueues": "emails,webhooks", "WorkerQueues": "high,default,reports"},
    ],
    ids=["defaults", "unsigned", "unencrypted", "other-queues"],
)
def test_every_check_holds_with_the_scheduler_on(overrides: dict[str, str]) -> None:
    t = build(Scheduler="lambda", **overrides)
    for check in CHECKS:
        check(t)


@pytest.mark.parametrize("overrides", [{"LambdaQueues": ""}, {"WorkerQueues": ""}], ids=["ecs-only", "lambda-only"])
def test_the_scheduler_runs_with_either_consumer_alone(overrides: dict[str, str]) -> None:
    """The scheduler only sends: it deploys the same whether jobs run on the poller, on Lambda, or both."""
    t = build(Scheduler="lambda", **overrides)
    assert list(t.schedulers()) == ["ScheduleFunction"]
    for check in (check_scheduler, *stack_checks()):
        check(t)


@pytest.mark.parametrize("overrides", [{}, {"LambdaQueues": ""}, {"LambdaQueues": "emails,webhooks"}])
def test_the_scheduler_sends_to_every_queue_and_consumes_none(overrides: dict[str, str]) -> None:
    t = build(Scheduler="lambda", **overrides)
    granted = t.grants(_role_of(t.schedulers()["ScheduleFunction"]["Role"]))
    queues = t.of_type("AWS::SQS::Queue")
    sources = set(t.source_queues())
    assert sources and set(queues) == sources | t.dlq_names()
    for queue in queues:
        actions = {action for action, resource in granted if resource == f"@{queue}.Arn"}
        if queue in sources:
            assert actions == {"sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"}, (queue, actions)
        else:
            assert not actions, f"the scheduler may {actions} on the DLQ {queue}"
    assert not {action for action, _ in granted if action in CONSUME}


def stack_checks() -> tuple[Callable[[Template], None], ...]:
    """What every variant of the stack must pass: the failed-jobs store, its alarms, dashboard and trusts."""
    return (
        check_failed_jobs_store,
        check_alarms,
        check_failure_rate_alarms,
        check_consumer_alarms,
        check_service_alarms,
        check_dashboard,
        check_trust_policies,
    )
