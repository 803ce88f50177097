"""The operators' managed policies in infra/template.yaml grant exactly the AWS calls their commands make.

`sqsjobs failed ...`, `batches ...`, `check`, `monitor`, `workers`, `restart`, `pause` and `continue` run
with people's credentials (OperatorPolicy and one OperatorQueuePolicy per queue, which an admin attaches),
`sqsjobs keys rotate` with a key admin's (KeyAdminPolicy). test_iam_least_privilege.py leaves this code out
of the consumers' roles; here it is read the same way, per command: each CLI verb's function is followed
through everything it may run (functions it names, methods of the objects it holds, properties it reads; an
object's class comes from the annotations, the code is typed; a boto3 client is followed into the functions
it is handed to), and the boto3 calls met on the way are its AWS calls (botocore's service models name
them, as there). A command that starts making
a new call fails this test until the template grants it; a grant no command needs fails it too. A run of the
commands against moto checks the reading itself: they make no call it missed.
"""

from __future__ import annotations

import ast
import inspect
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import pytest
from botocore.client import BaseClient
from typer.testing import CliRunner

from sqsjobs import App, Job, aws, batch
from sqsjobs.cli import cli
from sqsjobs.encryption import CONTEXT
from sqsjobs.provisioning import provision
from sqsjobs.worker import Worker, WorkerOptions
from tests.unit.test_iam_least_privilege import (
    HANDED_CLIENTS,
    SERVICES,
    _builds_a_client,
    _services_named,
    calls,
    granted,
    iam_actions,
    is_operator,
    modules,
    operations,
    required,
)
from tests.unit.test_infra_template import Template, _as_list, _statements, build

#: CLI verbs (a group's verbs, or one command) -> the managed policies that must grant what they call.
OPERATOR_VERBS = {
    "failed": "operator",
    "batches": "operator",
    "check": "operator",
    "monitor": "operator",
    "workers": "operator",
    "restart": "operator",
    "pause": "operator",
    "continue": "operator",
    "jobs": "operator",
    "dashboard": "operator",
    "keys": "key-admin",
}
#: Verbs that are nobody's operator work: `work` runs as the consumers (their roles), `local` starts a local
#: AWS, `provision` creates what the template creates, `schedule` dispatches new jobs as the application's
#: producers do (`run` is what ScheduleRole grants; docs/scheduler.md), which operators may not (KMS data keys).
NOT_OPERATOR_VERBS = {"work", "local", "provision", "schedule", "schema"}
#: The stack's operators run with SQSJOBS_CONNECTION=sqs. On the `sync` connection, building it hands the
#: runner to the connection (jobs run in the CLI's process, with the consumers' calls): not their case.
CUT = {
    (("sqsjobs.app", "App._build_connection"), ("sqsjobs.app", "App.runner")),
    (("sqsjobs.app", "App._build_connection"), ("sqsjobs.runner.core", "Runner.process")),
}
#: Actions AWS authorises on "*" only (no resource-level permissions).
AWS_REQUIRES_STAR = {"lambda:ListEventSourceMappings", "cloudwatch:GetMetricData"}
#: Event source mappings are authorised by their own ARN (its UUID is AWS's, unknown to the template), narrowed
#: by the `lambda:FunctionArn` condition key to the mappings of this stack's function.
MAPPING_ACTIONS = {"lambda:UpdateEventSourceMapping"}
MAPPINGS = "arn:@AWS::Partition:lambda:@AWS::Region:@AWS::AccountId:event-source-mapping:*"
#: What only operators (or key admins) may do: no consumer role may, or a compromised job could too.
NEVER_FOR_CONSUMERS = {
    "sqs:PurgeQueue",
    "sqs:DeleteQueue",
    "sqs:SetQueueAttributes",
    "dynamodb:Scan",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecret",
    "lambda:ListEventSourceMappings",
    "lambda:GetFunctionConfiguration",
    "lambda:UpdateEventSourceMapping",
    "cloudwatch:GetMetricData",
}
DLQ_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    # `failed redrive`: a move task's source is the DLQ, and SQS checks these on it.
    "sqs:StartMessageMoveTask",
    "sqs:ListMessageMoveTasks",
    "sqs:CancelMessageMoveTask",
    "sqs:ListDeadLetterSourceQueues",
}


# ---------------------------------------------------------------------------------- the reading

FuncKey = tuple[str, str]  # (module, "function" or "Class.method")
ClassKey = tuple[str, str]  # (module, "Class")
Types = frozenset[ClassKey]
NONE: Types = frozenset()
Function = ast.FunctionDef | ast.AsyncFunctionDef
#: A boto3 client is typed (CLIENT, service): `aws.client("sqs")` makes one, and it may be handed on.
CLIENT = "boto3"


@dataclass
class _Class:
    node: ast.ClassDef
    methods: dict[str, Function] = field(default_factory=dict)
    #: attribute -> its annotation: `x: T` in the class body, `self.x: T = ...`, a property's return type
    annotated: dict[str, ast.expr] = field(default_factory=dict)
    #: attribute -> (method, value) of each `self.x = value` (and class-level `x = ...`, with no method)
    assigned: dict[str, list[tuple[str, ast.expr]]] = field(default_factory=dict)

    @property
    def protocol(self) -> bool:
        return any(isinstance(base, ast.Name) and base.id == "Protocol" for base in self.node.bases)


class Program:
    """sqsjobs' modules, functions, classes and imports: enough to follow a verb down to its boto3 calls."""

    def __init__(self) -> None:
        self.trees: dict[str, ast.Module] = {}
        packages = set()
        for path, tree in modules():
            parts = path.removesuffix(".py").split("/")
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            self.trees[name] = tree
            if parts[-1] == "__init__":
                packages.add(name)
        self.defs: dict[str, dict[str, ast.AST]] = {}
        self.imports: dict[str, dict[str, tuple[str, str | None]]] = {}
        self.classes: dict[ClassKey, _Class] = {}
        self.functions: dict[FuncKey, tuple[Function, ClassKey | None]] = {}
        for name, tree in self.trees.items():
            self._index(name, tree, name if name in packages else name.rpartition(".")[0])
        self.every = operations()
        #: module -> {boto3 method: "service:Operation"} for the services a client-building module names
        self.operations = {
            name: {method: f"{svc}:{op}" for svc in _services_named(tree) for method, op in self.every[svc].items()}
            for name, tree in self.trees.items()
            if _builds_a_client(tree)
        }
        self._envs: dict[FuncKey, dict[str, Types]] = {}
        self._busy: set[tuple[ClassKey, str, str]] = set()
        #: function -> parameter -> the clients call sites hand it (sqsjobs.dlq_reading is given one)
        self.handed: dict[FuncKey, dict[str, Types]] = {}
        self._hand_on_clients()

    def _index(self, module: str, tree: ast.Module, package: str) -> None:
        imports: dict[str, tuple[str, str | None]] = {}
        for node in ast.walk(tree):  # lazy imports inside functions count too
            if isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:
                    parts = package.split(".")
                    anchor = ".".join(parts[: len(parts) - node.level + 1])
                    source = f"{anchor}.{source}" if source else anchor
                for alias in node.names:
                    imports[alias.asname or alias.name] = (source, alias.name)
            elif isinstance(node, ast.Import):  # `import a.b` binds `a`; `import a.b as c` binds `c` to a.b
                for alias in node.names:
                    imports[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0],
                        None,
                    )
        defs: dict[str, ast.AST] = {}
        for node in tree.body:
            if isinstance(node, Function):
                defs[node.name] = node
                self.functions[(module, node.name)] = (node, None)
            elif isinstance(node, ast.ClassDef):
                defs[node.name] = node
                self._index_class(module, node)
        self.defs[module], self.imports[module] = defs, imports

    def _index_class(self, module: str, node: ast.ClassDef) -> None:
        info = _Class(node)
        for item in node.body:
            if isinstance(item, Function):
                decorators = {d.id if isinstance(d, ast.Name) else getattr(d, "attr", "") for d in item.decorator_list}
                if "setter" in decorators:
                    continue
                info.methods[item.name] = item
                self.functions[(module, f"{node.name}.{item.name}")] = (item, (module, node.name))
                if decorators & {"property", "cached_property"} and item.returns is not None:
                    info.annotated[item.name] = item.returns
                for sub in ast.walk(item):
                    if isinstance(sub, ast.AnnAssign) and _self_attribute(sub.target):
                        info.annotated[sub.target.attr] = sub.annotation  # type: ignore[union-attr]
                    elif isinstance(sub, ast.Assign):
                        for target in sub.targets:
                            if _self_attribute(target):
                                info.assigned.setdefault(target.attr, []).append((item.name, sub.value))  # type: ignore[union-attr]
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                info.annotated[item.target.id] = item.annotation
            elif isinstance(item, ast.Assign):
                for target in item.targets:
                    if isinstance(target, ast.Name):
                        info.assigned.setdefault(target.id, [])
        self.classes[(module, node.name)] = info

    # -- names and classes

    def resolve(self, module: str, name: str, depth: int = 0) -> tuple[str, Any] | None:
        """("module", name), ("function", FuncKey), ("class", ClassKey), or None (not sqsjobs' own)."""
        node = self.defs.get(module, {}).get(name)
        if node is not None:
            return ("class" if isinstance(node, ast.ClassDef) else "function", (module, name))
        source, attr = self.imports.get(module, {}).get(name, ("", None))
        if attr is None:
            return ("module", source) if source in self.trees else None
        if f"{source}.{attr}" in self.trees:
            return ("module", f"{source}.{attr}")
        return self.resolve(source, attr, depth + 1) if source in self.trees and depth < 10 else None

    def symbol(self, module: str, expr: ast.expr) -> tuple[str, Any] | None:
        """What a name or a dotted `module.name` stands for, without looking at any object."""
        if isinstance(expr, ast.Name):
            return self.resolve(module, expr.id)
        if isinstance(expr, ast.Attribute):
            inner = self.symbol(module, expr.value)
            if inner is not None and inner[0] == "module":
                if f"{inner[1]}.{expr.attr}" in self.trees:
                    return ("module", f"{inner[1]}.{expr.attr}")
                return self.resolve(inner[1], expr.attr)
        return None

    @cache  # noqa: B019 - one Program per test session
    def mro(self, key: ClassKey) -> tuple[ClassKey, ...]:
        out: list[ClassKey] = []
        todo = [key]
        while todo:
            current = todo.pop(0)
            if current in self.classes and current not in out:
                out.append(current)
                for base in self.classes[current].node.bases:
                    found = self.symbol(current[0], base)
                    if found is not None and found[0] == "class":
                        todo.append(found[1])
        return tuple(out)

    def _members(self, key: ClassKey) -> set[str]:
        names: set[str] = set()
        for cls in self.mro(key):
            info = self.classes[cls]
            names |= set(info.methods) | set(info.annotated) | set(info.assigned)
        return {name for name in names if not name.startswith("__")}

    @cache  # noqa: B019
    def implementations(self, key: ClassKey) -> frozenset[ClassKey]:
        """The class, its subclasses and, for a Protocol, every class that has all of its members."""
        if key not in self.classes:
            return NONE  # a boto3 client
        found = {other for other in self.classes if key in self.mro(other)}
        if self.classes[key].protocol:
            wanted = self._members(key)
            found |= {o for o, info in self.classes.items() if not info.protocol and wanted <= self._members(o)}
        return frozenset(found)

    def lookup(self, key: ClassKey, name: str) -> list[FuncKey]:
        """The functions `obj.name` may run for an `obj` typed `key` (each implementation's own)."""
        found = []
        for impl in self.implementations(key):
            for cls in self.mro(impl):
                if name in self.classes[cls].methods:
                    found.append((cls[0], f"{cls[1]}.{name}"))
                    break
        return found

    # -- types

    def annotation(self, module: str, node: ast.expr | None) -> Types:
        """The sqsjobs classes an annotation names (unions, Optional, containers' items looked into)."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return self.annotation(module, ast.parse(node.value, mode="eval").body)
        if isinstance(node, ast.BinOp):
            return self.annotation(module, node.left) | self.annotation(module, node.right)
        if isinstance(node, ast.Subscript):
            parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            return NONE.union(*(self.annotation(module, part) for part in parts))
        found = self.symbol(module, node) if node is not None else None
        return frozenset({found[1]}) if found is not None and found[0] == "class" else NONE

    def attribute(self, key: ClassKey, name: str) -> Types:
        """The types of `obj.name` for an `obj` typed `key`: annotated, or what its methods assign to it."""
        out: set[ClassKey] = set()
        for impl in self.implementations(key):
            for cls in self.mro(impl):
                info = self.classes[cls]
                if name in info.annotated:
                    out |= self.annotation(cls[0], info.annotated[name])
                for method, value in info.assigned.get(name, []):
                    if (cls, name, method) not in self._busy:
                        self._busy.add((cls, name, method))
                        out |= self.types(cls[0], self.env((cls[0], f"{cls[1]}.{method}")), value)
                        self._busy.discard((cls, name, method))
        return frozenset(out)

    def types(self, module: str, env: dict[str, Types], expr: ast.expr) -> Types:
        """The sqsjobs classes an expression's value may be an instance of (or be, for a class)."""
        if isinstance(expr, ast.Name) and expr.id in env:
            return env[expr.id]
        if isinstance(expr, ast.Name | ast.Attribute) and (found := self.symbol(module, expr)) is not None:
            return frozenset({found[1]}) if found[0] == "class" else NONE
        if isinstance(expr, ast.Attribute):
            return NONE.union(*(self.attribute(c, expr.attr) for c in self.types(module, env, expr.value)))
        if isinstance(expr, ast.Call):
            local = isinstance(expr.func, ast.Name) and expr.func.id in env
            found = None if local else self.symbol(module, expr.func)
            if found == ("function", ("sqsjobs.aws", "client")):
                named = expr.args[0] if expr.args else None
                given = [named.value] if isinstance(named, ast.Constant) and named.value in SERVICES else SERVICES
                return frozenset((CLIENT, str(service)) for service in given)
            if found is not None and found[0] == "class":  # an instance of it
                return frozenset({found[1]})
            functions = self.targets(module, env, expr.func)
            return NONE.union(*(self.annotation(f[0], self.functions[f][0].returns) for f in functions))
        if isinstance(expr, ast.BoolOp):
            return NONE.union(*(self.types(module, env, value) for value in expr.values))
        if isinstance(expr, ast.IfExp):
            return self.types(module, env, expr.body) | self.types(module, env, expr.orelse)
        if isinstance(expr, ast.Await | ast.Starred | ast.Subscript):
            return self.types(module, env, expr.value)
        return NONE

    def env(self, function: FuncKey) -> dict[str, Types]:
        """Local names -> types: annotated parameters, `self`, and what assignments, loops and `with` bind."""
        if function in self._envs:
            return self._envs[function]
        node, cls = self.functions[function]
        module = function[0]
        env: dict[str, Types] = {}
        self._envs[function] = env  # a lookup that comes back here sees what is known so far
        for inner in ast.walk(node):
            if isinstance(inner, Function | ast.Lambda):
                arguments = [*inner.args.posonlyargs, *inner.args.args, *inner.args.kwonlyargs]
                for argument in arguments:
                    env[argument.arg] = env.get(argument.arg, NONE) | self.annotation(module, argument.annotation)
                if inner is node and cls is not None and arguments and not _static(node):
                    env[arguments[0].arg] = frozenset({cls})
        for name, clients in self.handed.get(function, {}).items():
            env[name] = env.get(name, NONE) | clients
        for _ in range(2):  # once more: a name may be bound from one bound later in the text
            for sub in ast.walk(node):
                bound: list[tuple[ast.expr, Types]] = []
                if isinstance(sub, ast.Assign):
                    bound = [(target, self.types(module, env, sub.value)) for target in sub.targets]
                elif isinstance(sub, ast.AnnAssign):
                    bound = [(sub.target, self.annotation(module, sub.annotation))]
                elif isinstance(sub, ast.NamedExpr):
                    bound = [(sub.target, self.types(module, env, sub.value))]
                elif isinstance(sub, ast.For | ast.AsyncFor | ast.comprehension):
                    bound = [(sub.target, self.types(module, env, sub.iter))]
                elif isinstance(sub, ast.withitem) and sub.optional_vars is not None:
                    bound = [(sub.optional_vars, self.types(module, env, sub.context_expr))]
                for target, found in bound:
                    if isinstance(target, ast.Name) and found:
                        env[target.id] = env.get(target.id, NONE) | found
        return env

    # -- the graph

    def targets(self, module: str, env: dict[str, Types], expr: ast.expr) -> list[FuncKey]:
        """The functions a name, `module.name` or `obj.name` may stand for (a class: its constructor)."""
        if isinstance(expr, ast.Name) and expr.id in env:
            return []
        found = self.symbol(module, expr)
        if found is None:
            if isinstance(expr, ast.Attribute):
                return [f for c in self.types(module, env, expr.value) for f in self.lookup(c, expr.attr)]
            return []
        if found[0] == "function":
            return [found[1]]
        if found[0] == "class":
            return [f for name in ("__init__", "__post_init__") for f in self.lookup(found[1], name)]
        return []

    @cache  # noqa: B019
    def references(self, function: FuncKey) -> frozenset[FuncKey]:
        """What a function may run: the functions it names or calls, methods of objects it holds, properties
        it reads (a function handed on as a value counts: it may be called there)."""
        node, _ = self.functions[function]
        env = self.env(function)
        return frozenset(
            target
            for sub in ast.walk(node)
            if isinstance(sub, ast.Name | ast.Attribute) and isinstance(sub.ctx, ast.Load)
            for target in self.targets(function[0], env, sub)
            if target != function
        )

    def edges(self, function: FuncKey) -> frozenset[FuncKey]:
        return frozenset(target for target in self.references(function) if (function, target) not in CUT)

    def aws_calls(self, function: FuncKey) -> set[str]:
        """`service:Operation` a function calls itself: read as test_iam_least_privilege reads a module, and
        any call on a client the function was handed."""
        node = self.functions[function][0]
        ops = self.operations.get(function[0], {})
        found = {ops[method] for method, _ in calls(node) if method in ops}  # type: ignore[arg-type]
        env = self.env(function)
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
                method = sub.func.attr
                if method == "get_paginator" and sub.args and isinstance(sub.args[0], ast.Constant):
                    method = str(sub.args[0].value)
                for kind, service in self.types(function[0], env, sub.func.value):
                    if kind == CLIENT and method in self.every[service]:
                        found.add(f"{service}:{self.every[service][method]}")
        return found

    def _hand_on_clients(self) -> None:
        """Follow clients into the functions and constructors they are passed to (two hops deep)."""
        for _ in range(3):
            before = {f: dict(params) for f, params in self.handed.items()}
            for function, (node, _) in list(self.functions.items()):
                env = self.env(function)
                for call in (sub for sub in ast.walk(node) if isinstance(sub, ast.Call)):
                    given = {
                        key: clients
                        for key, value in [*enumerate(call.args), *((k.arg, k.value) for k in call.keywords)]
                        if (clients := frozenset(t for t in self.types(function[0], env, value) if t[0] == CLIENT))
                    }
                    for target in self.targets(function[0], env, call.func) if given else []:
                        self._hand(target, given)
            if self.handed == before:
                return
            self._envs.clear()

    def _hand(self, target: FuncKey, given: dict[int | str | None, Types]) -> None:
        node, cls = self.functions[target]
        positional = [*node.args.posonlyargs, *node.args.args][1 if cls is not None and not _static(node) else 0 :]
        for key, clients in given.items():
            name = key if isinstance(key, str) else positional[key].arg if key < len(positional) else None
            if name is not None:
                params = self.handed.setdefault(target, {})
                params[name] = params.get(name, NONE) | clients

    def reach(self, root: FuncKey) -> dict[FuncKey, FuncKey | None]:
        """Every function `root` may run -> the one it was first reached from."""
        via: dict[FuncKey, FuncKey | None] = {root: None}
        todo = [root]
        while todo:
            current = todo.pop(0)
            for target in sorted(self.edges(current)):
                if target not in via and target in self.functions:
                    via[target] = current
                    todo.append(target)
        return via


def _self_attribute(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"


def _static(node: Function) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)


@cache
def program() -> Program:
    return Program()


def verbs() -> dict[str, FuncKey]:
    """`failed retry`, `check`, ... -> the function typer runs for it."""
    found = {}
    for group in cli.registered_groups:
        assert group.typer_instance is not None
        for command in group.typer_instance.registered_commands:
            function = inspect.unwrap(command.callback)  # type: ignore[arg-type]
            found[f"{group.name} {command.name}"] = (function.__module__, function.__qualname__)
    for command in cli.registered_commands:
        function = inspect.unwrap(command.callback)  # type: ignore[arg-type]
        found[str(command.name)] = (function.__module__, function.__qualname__)
    return found


#: Where a job runs (a received message's handler is called from here).
RUNS_A_JOB: FuncKey = ("sqsjobs.runner.core", "Runner.process")


@dataclass(frozen=True)
class Call:
    verb: str
    call: str
    path: tuple[str, ...]  # how the verb gets there (for messages)


@cache
def verb_calls(verb: str) -> tuple[Call, ...]:
    """The AWS calls one verb may make, each with the first path found to it."""
    root = verbs()[verb]
    via = program().reach(root)
    found: dict[str, Call] = {}
    for function in via:
        for call in program().aws_calls(function):
            if call not in found:
                path, step = [], function
                while step is not None:
                    path.append(step[1])
                    step = via[step]
                found[call] = Call(verb, call, tuple(reversed(path)))
    return tuple(found[call] for call in sorted(found))


def calls_of(kind: str) -> dict[str, Call]:
    """`service:Operation` -> how a verb of `kind` ("operator", "key-admin") makes it."""
    out: dict[str, Call] = {}
    for verb in verbs():
        if OPERATOR_VERBS.get(verb.split()[0]) == kind:
            for call in verb_calls(verb):
                out.setdefault(call.call, call)
    return out


# ------------------------------------------------------------------------------- the template


def policies(t: Template, kind: str) -> dict[str, dict[str, Any]]:
    """The operators' managed policies (OperatorPolicy, OperatorQueuePolicy*) or the key admins'."""
    names = ("OperatorPolicy", "OperatorQueuePolicy") if kind == "operator" else ("KeyAdminPolicy",)
    return {name: p for name, p in t.of_type("AWS::IAM::ManagedPolicy").items() if name.startswith(names)}


def statements(t: Template, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, props in policies(t, kind).items():
        for statement in _statements(props["PolicyDocument"]):
            yield name, statement


def grants(t: Template, kind: str) -> set[tuple[str, str]]:
    pairs = set()
    for _, statement in statements(t, kind):
        for action in _as_list(statement["Action"]):
            for resource in _as_list(statement["Resource"]):
                pairs.add((str(action), str(resource)))
    return pairs


def consumer_envs(t: Template) -> list[dict[str, str]]:
    envs = []
    if t.of_type("AWS::Serverless::Function"):
        envs.append({k: str(v) for k, v in t.function()["Environment"]["Variables"].items()})
    if t.of_type("AWS::ECS::TaskDefinition"):
        envs.append(t.container_env())
    return envs


def shared_setting(t: Template, name: str) -> str:
    values = {env.get(name, "") for env in consumer_envs(t)}
    assert len(values) == 1, f"the consumers disagree on {name}: {values}"
    return values.pop()


def scope(t: Template, action: str) -> set[str]:
    """The resources of this stack an operator needs `action` on (none: the stack has nothing to grant)."""
    service = action.partition(":")[0]
    queues = t.of_type("AWS::SQS::Queue")
    dlqs = {f"@{name}.Arn" for name in t.dlq_names()}
    sources = {f"@{name}.Arn" for name in queues} - dlqs
    if action in DLQ_ACTIONS:  # failed jobs are read, unhidden and deleted in the DLQs only
        return dlqs
    if action == "sqs:SendMessage":  # a retried job goes back to its source queue, never to a DLQ
        return sources
    if action in ("sqs:GetQueueUrl", "sqs:GetQueueAttributes"):
        return sources | dlqs
    if action in AWS_REQUIRES_STAR:
        return {"*"}
    if action in MAPPING_ACTIONS:  # `pause` / `continue` of a Lambda-fed queue (a poller-fed one has none)
        return {MAPPINGS} if t.of_type("AWS::Serverless::Function") else set()
    if service == "dynamodb":
        return {f"@{name}.Arn" for name in t.of_type("AWS::DynamoDB::Table")}
    if service == "s3":
        prefix = shared_setting(t, "SQSJOBS_PAYLOAD_PREFIX")
        assert prefix.endswith("/") and "*" not in prefix
        return {f"@{name}.Arn/{prefix}*" for name in t.of_type("AWS::S3::Bucket")}
    if service == "kms":
        return {f"@{name}.Arn" for name in t.of_type("AWS::KMS::Key")}
    if service in ("secretsmanager", "ssm"):  # the keyring the consumers name, if it lives there
        reference = shared_setting(t, "SQSJOBS_SIGNING_KEY")
        return {reference.removeprefix(service + ":")} if reference.startswith(service + ":") else set()
    if service == "lambda":
        return {f"@{name}.Arn" for name in t.of_type("AWS::Serverless::Function")}
    raise AssertionError(f"{action}: an operator call with no scope here; decide what it may touch")


def needed(t: Template, kind: str) -> set[tuple[str, str]]:
    return {(action, resource) for action in iam_actions(set(calls_of(kind))) for resource in scope(t, action)}


CONFIGURATIONS = [
    {},
    {"Signing": "off"},
    {"Encryption": "off"},
    {"Signing": "off", "Encryption": "off"},
    {"AppName": "shop", "LambdaQueues": "emails,webhooks", "WorkerQueues": "high,default,reports"},
    {"LambdaQueues": ""},
    {"WorkerQueues": ""},
]
IDS = ["defaults", "unsigned", "unencrypted", "neither", "more-queues", "no-lambda", "no-poller"]


# --------------------------------------------------------------------------------------- tests


def test_every_cli_verb_is_an_operators_or_says_whose_it_is() -> None:
    names = {verb.split()[0] for verb in verbs()}
    assert names == set(OPERATOR_VERBS) | NOT_OPERATOR_VERBS, "a new verb: whose credentials run it?"


def test_the_reading_finds_the_calls_it_must() -> None:
    """If following the verbs found nothing, the comparisons below would prove nothing."""
    expected = {
        "failed list": {"sqs:ReceiveMessage", "sqs:ChangeMessageVisibilityBatch", "sqs:GetQueueUrl", "s3:GetObject"},
        "failed show": {"kms:Decrypt", "secretsmanager:GetSecretValue"},
        "failed retry": {"sqs:SendMessageBatch", "sqs:DeleteMessage", "s3:PutObject", "dynamodb:DeleteItem"},
        "failed summary": {"sqs:ReceiveMessage", "sqs:ChangeMessageVisibilityBatch", "s3:GetObject"},
        "failed prune": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "s3:DeleteObject"},
        "failed forget": {"sqs:DeleteMessage", "s3:DeleteObject"},
        "batches list": {"dynamodb:Scan"},
        "batches show": {"dynamodb:GetItem", "dynamodb:Query"},
        "batches prune": {"dynamodb:Scan", "dynamodb:DeleteItem"},
        "check": {"sqs:GetQueueAttributes", "lambda:ListEventSourceMappings", "lambda:GetFunctionConfiguration"},
        "keys rotate": {"secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"},
        "monitor": {"sqs:GetQueueUrl", "sqs:GetQueueAttributes", "cloudwatch:GetMetricData"},
        "workers": {"dynamodb:Query"},
        "restart": {"dynamodb:PutItem", "dynamodb:Query"},
        "pause": {"sqs:GetQueueAttributes", "lambda:ListEventSourceMappings", "lambda:UpdateEventSourceMapping"},
        "continue": {"dynamodb:GetItem", "dynamodb:DeleteItem", "lambda:UpdateEventSourceMapping"},
        "jobs show": {"dynamodb:GetItem"},
        "jobs list": {"dynamodb:Query", "dynamodb:GetItem"},
        "jobs cancel": {"dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:GetItem"},
    }
    for verb, must in expected.items():
        found = {call.call for call in verb_calls(verb)}
        assert must <= found, f"`sqsjobs {verb}`: {sorted(must - found)} not found"
    # What provisioning creates is not an operator's call, and no operator verb runs a job: none reaches the
    # runner, and none makes what only running or dispatching a job makes (a new data key, the store's
    # transactions). A retry sends jobs that exist (in batches: SendMessageBatch), sealed as they were. The
    # UpdateItems are `jobs cancel`'s mark on a job's log record (conditional on its not having started) and
    # `failed triage`'s count of the retries a rule made of a job (`retry_later(times=)`).
    operator = set(calls_of("operator")) | set(calls_of("key-admin"))
    assert not {"sqs:CreateQueue", "dynamodb:CreateTable", "s3:CreateBucket"} & operator
    assert not {"kms:GenerateDataKey", "dynamodb:TransactWriteItems"} & operator
    updating = {
        verb
        for verb in verbs()
        if verb.split()[0] in OPERATOR_VERBS and "dynamodb:UpdateItem" in {c.call for c in verb_calls(verb)}
    }
    # The dashboard's buttons are `jobs cancel` and a batch's cancel mark (`cancelled_at`, set once).
    assert updating == {"jobs cancel", "failed triage", "dashboard"}, updating
    for verb, root in verbs().items():
        if verb.split()[0] in OPERATOR_VERBS:
            assert RUNS_A_JOB not in program().reach(root), f"`sqsjobs {verb}` may run a job"
    assert {"sqs:CreateQueue", "dynamodb:CreateTable"} <= {call.call for call in verb_calls("provision")}
    assert not {call.call for call in verb_calls("keys generate")}


def test_every_cut_is_still_an_edge_of_the_code() -> None:
    """A cut that no longer matches the code is dead weight, or hides a path that moved."""
    for source, target in CUT:
        assert target in program().references(source), f"{source[1]} no longer reaches {target[1]}: remove the cut"


def test_every_client_handed_to_run_time_code_is_read_for_the_consumers() -> None:
    """test_iam_least_privilege.py reads a module's calls where it builds a client: a run-time module that
    calls a client built elsewhere (handed to it, as this reading sees) must be in its HANDED_CLIENTS."""
    handed: dict[str, set[str]] = {}
    for path, tree in modules():
        if is_operator(path):
            continue
        parts = path.removesuffix(".py").split("/")
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        own = _services_named(tree) if _builds_a_client(tree) else set()
        for (module, _), params in program().handed.items():
            if module == name:
                services = {service for clients in params.values() for _, service in clients} - own
                if services:
                    handed.setdefault(path, set()).update(services)
    assert handed == {path: set(services) for path, services in HANDED_CLIENTS.items()}


@pytest.mark.parametrize("overrides", CONFIGURATIONS, ids=IDS)
@pytest.mark.parametrize("kind", ["operator", "key-admin"])
def test_the_operators_policies_grant_exactly_what_their_verbs_call(kind: str, overrides: dict[str, str]) -> None:
    t = build(**overrides)
    have, need = grants(t, kind), needed(t, kind)
    how = calls_of(kind)

    def explain(pairs: set[tuple[str, str]]) -> list[str]:
        lines = []
        for action, resource in sorted(pairs):
            call = next((c for name, c in how.items() if action in iam_actions({name})), None)
            where = f" (`sqsjobs {call.verb}`: {' > '.join(call.path)})" if call else ""
            lines.append(f"{action} on {resource}{where}")
        return lines

    assert have == need, (
        f"{kind} policies: granted but never called: {explain(have - need)}; "
        f"called but not granted: {explain(need - have)}"
    )


@pytest.mark.parametrize("overrides", CONFIGURATIONS, ids=IDS)
def test_the_operators_policies_are_narrow_and_attached_by_an_admin(overrides: dict[str, str]) -> None:
    t = build(**overrides)
    signing = t.params["Signing"] == "on"
    assert "OperatorPolicy" in policies(t, "operator")
    assert set(policies(t, "key-admin")) == ({"KeyAdminPolicy"} if signing else set())
    queue_policies = {name for name in policies(t, "operator") if name != "OperatorPolicy"}
    assert queue_policies == {f"OperatorQueuePolicy{name.removeprefix('Queue')}" for name in t.source_queues()}
    outputs = {str(t.resolve(out["Value"])) for out in t.outputs.values()}
    for kind in ("operator", "key-admin"):
        for name, props in policies(t, kind).items():
            assert not {"Roles", "Users", "Groups"} & set(props), f"{name} is attached by an admin, not by the stack"
            assert f"@{name}" in outputs, f"no output gives the ARN of {name}"
            assert props["Path"] == f"/sqsjobs/{t.params['AppName']}/{kind}/", name
        for name, statement in statements(t, kind):
            assert statement["Effect"] == "Allow" and not {"NotAction", "NotResource"} & set(statement), name
            actions = [str(a) for a in _as_list(statement["Action"])]
            assert not any("*" in action for action in actions), f"{name}: {actions}"
            if "*" in _as_list(statement["Resource"]):
                assert set(actions) <= AWS_REQUIRES_STAR, f"{name}: Resource '*' for {actions}"
            if any(action.startswith("kms:") for action in actions):
                context = {f"kms:EncryptionContext:{k}": v for k, v in CONTEXT.items()}
                assert statement.get("Condition") == {"StringEquals": context}, f"{name}: keys for anything"
            if set(actions) & MAPPING_ACTIONS:  # the stack's own mappings: those of its function
                functions = [f"@{function}.Arn" for function in t.of_type("AWS::Serverless::Function")]
                assert set(actions) <= MAPPING_ACTIONS and len(functions) == 1, f"{name}: {actions}"
                assert _as_list(statement["Resource"]) == [MAPPINGS], f"{name}: {statement['Resource']}"
                condition = {"StringEquals": {"lambda:FunctionArn": functions[0]}}
                assert statement.get("Condition") == condition, f"{name}: any function's mappings"
    for role in t.roles().values() if len(consumer_envs(t)) == 2 else []:
        attached = t.of_type("AWS::IAM::Role")[role].get("ManagedPolicyArns", [])
        assert not {f"@{name}" for name in policies(t, "operator") | policies(t, "key-admin")} & set(attached)


@pytest.mark.parametrize("overrides", CONFIGURATIONS[:4], ids=IDS[:4])
def test_reviewing_failed_jobs_never_includes_writing_the_signing_key(overrides: dict[str, str]) -> None:
    t = build(**overrides)
    secrets = {a for a, _ in grants(t, "operator") if a.startswith(("secretsmanager:", "ssm:"))}
    assert secrets <= {"secretsmanager:GetSecretValue"}, f"OperatorPolicy may change the keyring: {secrets}"
    if t.params["Signing"] == "on":
        assert ("secretsmanager:PutSecretValue", "@SigningSecret") in grants(t, "key-admin")


@pytest.mark.parametrize("overrides", CONFIGURATIONS[:5], ids=IDS[:5])
def test_the_consumers_roles_get_no_operator_action(overrides: dict[str, str]) -> None:
    """A compromised job must not purge, scan, read the DLQs or change the key (the roles grant exactly
    what test_iam_least_privilege.py derives; this is what operators have and consumers must not)."""
    t = build(**overrides)
    envs = {"lambda": t.function()["Environment"]["Variables"], "worker": t.container_env()}
    dlqs = {f"@{name}.Arn" for name in t.dlq_names()}
    operators = {a for a, _ in grants(t, "operator") | grants(t, "key-admin")}
    for consumer, role in t.roles().items():
        have = t.grants(role)
        actions = {a for a, _ in have}
        assert not NEVER_FOR_CONSUMERS & actions, f"{consumer}: {sorted(NEVER_FOR_CONSUMERS & actions)}"
        assert not {(a, r) for a, r in have if a in DLQ_ACTIONS and r in dlqs}, f"{consumer} reads a DLQ"
        extra = (operators - required(t, envs[consumer])) & granted(t, role)
        assert not extra, f"{consumer} has operator-only actions {sorted(extra)}"


# ------------------------------------------------------------------ the reading, checked by a run


class Declined(Job, name="iam_operator.declined"):
    """An encrypted job that fails at once: a DLQ message with a sealed payload and an S3 body."""

    encrypted = True
    tries = 1
    card: str

    def handle(self) -> None:
        raise RuntimeError("declined")


class Member(Job, name="iam_operator.member"):
    ran: ClassVar[list[int]] = []
    n: int

    def handle(self) -> None:
        Member.ran.append(self.n)


def recorder(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every AWS call made from now on, as `service:Operation`."""
    seen: list[str] = []
    real: Callable[..., Any] = BaseClient._make_api_call

    def record(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        seen.append(f"{client.meta.service_model.service_name}:{operation}")
        return real(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    return seen


def test_a_run_of_the_verbs_makes_no_call_the_reading_missed(
    moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = aws.client("kms").create_key(Description="operators")["KeyMetadata"]["Arn"]
    ring = {"current": "k1", "k1": "operator-tests-" + "k" * 40}
    secret = aws.client("secretsmanager").create_secret(Name=f"{prefix}ring", SecretString=json.dumps(ring))["ARN"]
    env = {
        "SQSJOBS_QUEUE_PREFIX": prefix,
        "SQSJOBS_QUEUES": "default",
        "SQSJOBS_TABLE": f"{prefix}table",
        "SQSJOBS_BUCKET": f"{prefix}payloads",
        "SQSJOBS_PAYLOAD_THRESHOLD": "always",
        "SQSJOBS_KMS_KEY": key,
        "SQSJOBS_SIGNING_KEY": f"secretsmanager:{secret}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    app = App(connection="sqs", visibility_timeout=30)
    provision(app, ["default"])
    with app.activate():
        failed_id = Declined(card="4111").dispatch().job_id
        forgotten_id = Declined(card="4222").dispatch().job_id
        Declined(card="4333").dispatch()  # left for `failed prune`
        batch_id = batch([Member(n=1), Member(n=2)]).dispatch().id
        assert Worker(app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False) == 0
    monkeypatch.chdir(tmp_path)
    seen = recorder(monkeypatch)
    runner = CliRunner()
    for verb, args in [
        ("failed list", []),
        ("failed summary", []),
        ("failed show", [str(failed_id)]),
        ("failed forget", [str(forgotten_id)]),
        ("failed retry", [str(failed_id)]),
        ("failed prune", ["--older-than", "0s", "--yes"]),
        ("failed triage", []),
        ("failed redrive", ["--yes"]),
        ("failed flush", []),
        ("batches list", []),
        ("batches show", [batch_id]),
        ("batches prune", ["--hours", "0"]),
        ("check", []),
        # `monitor` on the queue this run made (its default is every queue of every registered job class).
        ("monitor", ["--queue", "default"]),
        ("workers", []),
        ("restart", []),
        # No Lambda here: `pause` finds no event source mapping to disable (ListEventSourceMappings only).
        ("pause", ["default"]),
        ("continue", ["default"]),
        ("jobs show", [str(failed_id)]),
        ("jobs list", ["--tag", "none"]),
        ("jobs cancel", ["never-dispatched"]),
        ("keys rotate", ["add", "--apply"]),
    ]:
        seen.clear()
        result = runner.invoke(cli, [*verb.split(), *args], terminal_width=200)
        # `check` also judges the queues of every job class registered (other test modules' too, on queues
        # this run did not create): its "found an error" (1) is an answer, not a failure to run; and
        # `jobs show` of a job the log never recorded (the log is off here) answers "not found" (1).
        answers = (0, 1) if verb in ("check", "jobs show") else (0,)
        assert result.exit_code in answers, f"sqsjobs {verb}: {result.output}"
        assert seen, f"`sqsjobs {verb}` made no AWS call: the run checks nothing"
        missed = set(seen) - {call.call for call in verb_calls(verb)}
        assert not missed, f"`sqsjobs {verb}` called {sorted(missed)}, which reading the code did not find"
