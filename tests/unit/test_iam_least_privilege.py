"""The consumers' roles in infra/template.yaml grant exactly the AWS calls sqsjobs makes at run time.

The calls are read from the code, not listed by hand: every module that builds a boto3 client is parsed
(ast), and each method it calls that is an operation of that client's service (botocore's own service
models name them) is an AWS call; so is a module handed a client built elsewhere (HANDED_CLIENTS).
Operators' commands (`sqsjobs failed`, `batches`, `keys`, `provision`, `check`, `monitor`, `workers`,
`restart`, `pause`, `continue`) run with people's credentials, not the consumers' roles, so their calls are
left out: a role that could purge a queue, pause a queue's consumers or rewrite the signing key would let a
compromised job do it too.

A new AWS call in the code fails this test until the template grants it; a grant no code uses fails it too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import botocore.session
import pytest
from botocore import xform_name

from tests.unit.test_infra_template import Template, build

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("sqs", "dynamodb", "s3", "secretsmanager", "ssm", "kms", "lambda", "cloudwatch")

#: Code that only operators run (their own credentials): never part of the consumers' roles. (Not
#: sqsjobs/workers.py: pollers beat and read the controls through it, with the store's item calls.)
OPERATOR_CODE = (
    "sqsjobs/cli/",
    "sqsjobs/provisioning.py",
    "sqsjobs/failed_jobs.py",
    "sqsjobs/failed_review.py",
    "sqsjobs/failed_filters.py",
    "sqsjobs/failed_triage.py",
    "sqsjobs/dlq_reading.py",
    "sqsjobs/queue_monitor.py",
    "sqsjobs/pausing.py",
    "sqsjobs/redrive.py",
    "sqsjobs/local.py",
    "sqsjobs/testing/",
    "sqsjobs/__main__.py",
    "sqsjobs/dashboard/",
)
#: Run-time modules that call a client they are handed (built in another module): module -> its services.
#: test_iam_operator.py checks this against the clients its reading sees handed on.
HANDED_CLIENTS = {"sqsjobs/metrics.py": ("cloudwatch",)}
#: Store methods only admin commands reach (`sqsjobs batches list|prune`, through these functions).
ADMIN_STORE_METHODS = {"scan": {"list_batches"}, "scan_at_most": {"list_batches_at_most"}}  # dashboard: the latter
ADMIN_FUNCTIONS = {"list_batches", "list_batches_at_most", "prune_batches"}

#: Operations whose IAM action has another name (the batch forms are authorised as the single ones).
IAM_ACTIONS = {
    "sqs:SendMessageBatch": {"sqs:SendMessage"},
    "sqs:DeleteMessageBatch": {"sqs:DeleteMessage"},
    "sqs:ChangeMessageVisibilityBatch": {"sqs:ChangeMessageVisibility"},
    # A transaction is authorised item by item: the store's hold a Put and an Update (checked below).
    "dynamodb:TransactWriteItems": {"dynamodb:PutItem", "dynamodb:UpdateItem"},
    "s3:HeadObject": {"s3:GetObject"},
}


#: The scheduler's calls (Scheduler=lambda: lambda_handlers/schedule.py over sqsjobs/scheduling.py): the
#: dispatch-once marks and run records (a conditional PutItem, GetItem, a conditional DeleteItem of a stale
#: mark, UpdateItem), then the dispatch of each due job (SendMessage/SendMessageBatch, the queue's URL and
#: attributes; PutObject for a large payload). It never receives, deletes or hides a message, never queries,
#: and never reads or deletes a payload. Listed by hand, not read from the code: the scheduler is one path
#: through run-time modules the consumers share, which the scan above cannot tell apart.
SCHEDULER_CALLS = {
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "sqs:SendMessage",
    "sqs:SendMessageBatch",
    "sqs:GetQueueUrl",
    "sqs:GetQueueAttributes",
    "s3:PutObject",
}
#: With SQSJOBS_KMS_KEY: sealing an encrypted job makes a data key; the scheduler opens none.
SCHEDULER_ENCRYPTING_CALLS = {"kms:GenerateDataKey"}
SCHEDULER_MODULE = "lambda_handlers/schedule.py"


def operations() -> dict[str, dict[str, str]]:
    """service -> {python method name: API operation name}, from botocore's service models."""
    session = botocore.session.get_session()
    return {svc: {xform_name(op): op for op in session.get_service_model(svc).operation_names} for svc in SERVICES}


def modules() -> Iterator[tuple[str, ast.Module]]:
    for root in ("sqsjobs", "lambda_handlers"):
        for path in sorted((REPO / root).rglob("*.py")):
            yield path.relative_to(REPO).as_posix(), ast.parse(path.read_text(), str(path))


def is_operator(module: str) -> bool:
    return module.startswith(OPERATOR_CODE)


def _builds_a_client(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("client", "create_client"):
                return True
    return False


def _services_named(tree: ast.Module) -> set[str]:
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in SERVICES}


class _Calls(ast.NodeVisitor):
    """(method name, enclosing function) of every `x.method(...)` call; `get_paginator("op")` counts as `op`."""

    def __init__(self) -> None:
        self.found: set[tuple[str, str]] = set()
        self._function = ""

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        outer, self._function = self._function, node.name
        self.generic_visit(node)
        self._function = outer

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if name == "get_paginator" and node.args and isinstance(node.args[0], ast.Constant):
                name = str(node.args[0].value)
            self.found.add((name, self._function))
        self.generic_visit(node)


def calls(tree: ast.Module) -> set[tuple[str, str]]:
    visitor = _Calls()
    visitor.visit(tree)
    return visitor.found


def aws_calls(runtime: bool) -> dict[str, set[str]]:
    """`service:Operation` -> the modules that call it, for run-time code (or for operators' code)."""
    ops = operations()
    found: dict[str, set[str]] = {}
    for module, tree in modules():
        if is_operator(module) == runtime or not (_builds_a_client(tree) or module in HANDED_CLIENTS):
            continue
        services = _services_named(tree) | set(HANDED_CLIENTS.get(module, ()))
        for method, function in calls(tree):
            if function in ADMIN_STORE_METHODS and module == "sqsjobs/stores/dynamodb.py":
                continue  # inside the store's own admin methods (they scan)
            for service in services:
                if method in ops[service]:
                    found.setdefault(f"{service}:{ops[service][method]}", set()).add(module)
    return found


def iam_actions(calls: set[str]) -> set[str]:
    return set().union(*(IAM_ACTIONS.get(call, {call}) for call in calls))


def required(t: Template, consumer_env: dict[str, str]) -> set[str]:
    """The actions a consumer needs with this template's configuration."""
    runtime = set(aws_calls(runtime=True))
    needed = {call for call in runtime if call.split(":")[0] in ("sqs", "dynamodb", "s3")}
    if consumer_env.get("SQSJOBS_KMS_KEY"):  # encrypted jobs: data keys made and opened by the consumers
        needed |= {call for call in runtime if call.startswith("kms:")}
    reference = consumer_env.get("SQSJOBS_SIGNING_KEY", "")
    for prefix in ("secretsmanager", "ssm"):
        if reference.startswith(prefix + ":"):
            needed |= {call for call in runtime if call.startswith(prefix + ":")}
    if consumer_env.get("SQSJOBS_METRICS") == "cloudwatch":  # PutMetricData; `emf` writes them to the logs
        needed |= {call for call in runtime if call.startswith("cloudwatch:")}
    return iam_actions(needed)


def granted(t: Template, role: str) -> set[str]:
    return {action for action, _ in t.grants(role) if not action.startswith("logs:")}


@pytest.mark.parametrize("encryption", ["on", "off"])
@pytest.mark.parametrize("signing", ["on", "off"])
def test_each_consumer_role_grants_exactly_the_calls_the_code_makes(signing: str, encryption: str) -> None:
    t = build(Signing=signing, Encryption=encryption)
    envs = {"lambda": t.function()["Environment"]["Variables"], "worker": t.container_env()}
    for consumer, role in t.roles().items():
        need, have = required(t, envs[consumer]), granted(t, role)
        assert have == need, (
            f"{consumer} role {role}: granted but never called: {sorted(have - need)}; "
            f"called but not granted: {sorted(need - have)}"
        )


def test_the_scan_finds_the_calls_it_must() -> None:
    """The reading of the code itself: if it found nothing, the comparison above would prove nothing."""
    runtime = aws_calls(runtime=True)
    for call in (
        "sqs:ReceiveMessage",
        "sqs:SendMessageBatch",
        "sqs:DeleteMessageBatch",
        "sqs:ChangeMessageVisibilityBatch",
        "dynamodb:PutItem",
        "dynamodb:TransactWriteItems",
        "dynamodb:Query",
        "s3:GetObject",
        "secretsmanager:GetSecretValue",
        "kms:GenerateDataKey",
        "kms:Decrypt",
        "cloudwatch:PutMetricData",
    ):
        assert call in runtime, f"{call} not found in the run-time code"
    assert "dynamodb:Scan" not in runtime, "a table scan is for admin commands only"
    operator = aws_calls(runtime=False)
    assert {
        "sqs:CreateQueue",
        "dynamodb:CreateTable",
        "secretsmanager:PutSecretValue",
        "cloudwatch:GetMetricData",
        "lambda:UpdateEventSourceMapping",
    } <= set(operator)
    assert not {
        "sqs:CreateQueue",
        "sqs:PurgeQueue",
        "secretsmanager:PutSecretValue",
        "cloudwatch:GetMetricData",
        "lambda:ListEventSourceMappings",
        "lambda:UpdateEventSourceMapping",
    } & set(runtime)


def test_metrics_to_cloudwatch_need_put_metric_data_and_emf_needs_nothing() -> None:
    """The template's consumers write EMF to their logs; a stack with SQSJOBS_METRICS=cloudwatch would need
    cloudwatch:PutMetricData, and the comparison above would ask for it."""
    t = build()
    env = dict(t.container_env())
    assert env.get("SQSJOBS_METRICS") == "emf"
    assert not {a for a in required(t, env) if a.startswith("cloudwatch:")}
    assert {a for a in required(t, {**env, "SQSJOBS_METRICS": "cloudwatch"}) if a.startswith("cloudwatch:")} == {
        "cloudwatch:PutMetricData"
    }


def test_the_store_transaction_holds_only_what_its_iam_actions_cover() -> None:
    tree = ast.parse((REPO / "sqsjobs/stores/dynamodb.py").read_text())
    kinds = {"Put", "Update", "Delete", "ConditionCheck"}
    used = {
        key.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict)
        for key in node.keys
        if isinstance(key, ast.Constant) and key.value in kinds
    }
    assert used == {"Put", "Update"}, f"TransactWriteItems now holds {used}: update IAM_ACTIONS and the template"


def test_admin_only_store_methods_are_reached_by_admin_commands_only() -> None:
    """`store.scan` is left out of the roles because only `sqsjobs batches list|prune` reach it."""
    for module, tree in modules():
        if is_operator(module):
            continue
        for method, function in calls(tree):
            if method in ADMIN_STORE_METHODS and module != "sqsjobs/stores/dynamodb.py":
                assert function in ADMIN_STORE_METHODS[method] | {method}, f"{module}: {function}() calls .{method}()"
        for node in ast.walk(tree):
            name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
            if name in ADMIN_FUNCTIONS and module != "sqsjobs/batches.py":
                raise AssertionError(f"{module} reaches {name}: the consumers' roles would need dynamodb:Scan")


def scheduler_required(env: dict[str, str]) -> set[str]:
    """The actions the scheduler needs with this configuration: it signs and seals what it sends like any sender."""
    needed = set(SCHEDULER_CALLS)
    if env.get("SQSJOBS_KMS_KEY"):
        needed |= SCHEDULER_ENCRYPTING_CALLS
    reference = env.get("SQSJOBS_SIGNING_KEY", "")
    runtime = set(aws_calls(runtime=True))
    for prefix in ("secretsmanager", "ssm"):
        if reference.startswith(prefix + ":"):
            needed |= {call for call in runtime if call.startswith(prefix + ":")}
    return iam_actions(needed)


@pytest.mark.parametrize("encryption", ["on", "off"])
@pytest.mark.parametrize("signing", ["on", "off"])
def test_the_scheduler_role_grants_exactly_the_calls_the_scheduler_makes(signing: str, encryption: str) -> None:
    t = build(Scheduler="lambda", Signing=signing, Encryption=encryption)
    ((name, function),) = t.schedulers().items()
    role = str(function["Role"]).removeprefix("@").removesuffix(".Arn")
    env = {key: str(value) for key, value in function["Environment"]["Variables"].items()}
    need, have = scheduler_required(env), granted(t, role)
    assert have == need, (
        f"{name} role {role}: granted but never called: {sorted(have - need)}; "
        f"called but not granted: {sorted(need - have)}"
    )
    assert not have & {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "dynamodb:Query"}


def test_the_scheduler_calls_are_calls_the_run_time_code_makes() -> None:
    """A name in SCHEDULER_CALLS that no run-time code calls is a typo or a call that went away. The handler
    itself, once it builds a client of its own, may call nothing else (it is read like every run-time module)."""
    runtime = aws_calls(runtime=True)
    unknown = (SCHEDULER_CALLS | SCHEDULER_ENCRYPTING_CALLS) - set(runtime)
    assert not unknown, f"no run-time code calls {sorted(unknown)}"
    own = {call for call, where in runtime.items() if SCHEDULER_MODULE in where}
    signing = {call for call in runtime if call.startswith(("secretsmanager:", "ssm:"))}
    assert own <= SCHEDULER_CALLS | SCHEDULER_ENCRYPTING_CALLS | signing, f"{SCHEDULER_MODULE} calls {sorted(own)}"
