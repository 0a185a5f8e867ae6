"""Offline checks of infra/bicep: every file parses, and the templates agree with the code.

No Bicep compiler can be installed here, so two independent parsers read every .bicep file:
tree-sitter-bicep (a full grammar: any ERROR/MISSING node is a syntax error, reported with its
line) and pycep-parser (which turns a file into JSON). On pycep's JSON a small evaluator runs
the templates' own expressions (split/map/filter/union/toObject, `${}` interpolation, ternaries)
with the default parameters, so the queue names, containers, lifecycle days and app settings
checked here are the ones Bicep would produce, not a re-implementation. Neither parser
type-checks: API versions and property names are checked by Azure at deploy time only.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pipeline.framework.registry import registered_step_specs, step_name
from pipeline.settings import LANES, Settings

ROOT = Path(__file__).resolve().parent.parent
BICEP = ROOT / "infra" / "bicep"
MAIN = BICEP / "main.bicep"
BICEP_FILES = sorted(BICEP.rglob("*.bicep"))

# Built-in role definition ids (Azure's built-in roles list; never guessed), comment = role name.
# Checked against MicrosoftDocs/azure-docs articles/role-based-access-control/built-in-roles/
# storage.md: Storage Table Data Contributor is …-0319b160aaa3, and Storage Blob Data Owner's
# actions include blobServices/generateUserDelegationKey/action (what Storage Blob Delegator
# grants alone), so the app's identity needs no Delegator for user-delegation SAS.
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"  # Storage Blob Data Owner
# Storage Blob Data Contributor (the system topic's dead-lettering)
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
STORAGE_BLOB_DELEGATOR = "db58b8e5-c6ad-4a2a-8342-4190687cbf4a"  # Storage Blob Delegator
# Storage Queue Data Contributor
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
# Storage Table Data Contributor
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
# Monitoring Metrics Publisher
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
COGNITIVE_SERVICES_USER = "a97b65f3-24c7-4388-baec-2e87135dc908"  # Cognitive Services User
# Cognitive Services OpenAI User: inference on Azure OpenAI deployments, no keys, no management
# (MicrosoftDocs/azure-docs articles/role-based-access-control/built-in-roles/
# ai-machine-learning.md, "id": "/providers/Microsoft.Authorization/roleDefinitions/5e0bd9bd-…")
COGNITIVE_SERVICES_OPENAI_USER = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
EVENTGRID_DATA_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"  # EventGrid Data Sender
# Cosmos DB Built-in Data Contributor: a Cosmos SQL role definition, not an ARM role.
COSMOS_DATA_CONTRIBUTOR = "00000000-0000-0000-0000-000000000002"

# Settings Flex Consumption rejects or ignores (functionAppConfig replaces them).
FLEX_REJECTED_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
}
KEY_MATERIAL = ("AccountKey", "listKeys(", "DefaultEndpointsProtocol", "SharedAccessKey")
HOST_SETTING_PREFIXES = ("AzureWebJobsStorage__", "APPLICATIONINSIGHTS_")

# Switches that turn on every optional resource, to see every setting Bicep can set.
ALL_FEATURES = {
    "enableAzureVision": True,
    "enableEventsTopic": True,
    "enableDocIntel": True,
    "enableFace": True,
    "enableOpenAi": True,
    "enableOpenAiEmbeddings": True,
    "azureVisionCapabilities": "text",
    "principalId": "00000000-0000-0000-0000-00000000abcd",
    "entraTenantId": "00000000-0000-0000-0000-0000000000aa",
    "entraAudience": "api://darkroom",
    "corsOrigins": ["https://photos.example.com", "http://localhost:5173"],
}
# Read by the Functions host, or by the process itself (glibc reads MALLOC_ARENA_MAX at start).
HOST_SETTINGS = {"AzureWebJobsDisableHomepage", "MALLOC_ARENA_MAX"}
# Secret settings Bicep may set, each only from a @secure() parameter of main.bicep (no default).
SECRET_PARAMS = {"DARKROOM_API_KEYS": "apiKeys", "DARKROOM_ADMIN_KEYS": "adminKeys"}
API_KEY_ENTRY = "web:" + "0" * 64  # NAME:sha256hex, as `python -m pipeline keys add` prints


# ------------------------------------------------------------------------------ parsing
def _code_without_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(re.sub(r"(^|\s)//.*$", "", line) for line in text.splitlines())


def _tree_sitter_errors(path: Path) -> list[str]:
    import tree_sitter_bicep
    from tree_sitter import Language, Parser

    tree = Parser(Language(tree_sitter_bicep.language())).parse(path.read_bytes())
    problems, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            row, col = node.start_point
            problems.append(f"{path.name}:{row + 1}:{col + 1}: {node.type} {node.text[:60]!r}")
        stack.extend(node.children)
    return problems


@cache
def parsed(path: Path) -> dict:
    from pycep import BicepParser

    model = BicepParser().parse(file_path=path)
    for section in ("parameters", "variables", "resources", "modules", "outputs"):
        model.setdefault(section, {})
    return model


def test_bicep_files_exist():
    names = {p.relative_to(BICEP).as_posix() for p in BICEP_FILES}
    assert {
        "main.bicep",
        "modules/storage.bicep",
        "modules/function-app.bicep",
        "modules/cosmos.bicep",
        "modules/monitoring.bicep",
        "modules/roles.bicep",
        "modules/eventgrid-system-topic.bicep",
        "modules/eventgrid-subscription.bicep",
        "modules/cognitive-account.bicep",
        "modules/events-topic.bicep",
    } <= names


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(BICEP).as_posix())
def test_parses_with_tree_sitter(path):
    assert _tree_sitter_errors(path) == []


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(BICEP).as_posix())
def test_parses_with_pycep(path):
    model = parsed(path)
    assert model["resources"] or model["modules"]


def test_tree_sitter_reports_a_broken_file(tmp_path):
    """The syntax check can fail: a truncated property is reported with its line."""
    bad = tmp_path / "bad.bicep"
    bad.write_text("resource x 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: \n}\n")
    assert _tree_sitter_errors(bad)


def test_modules_referenced_by_main_exist():
    for module in parsed(MAIN)["modules"].values():
        assert (BICEP / module["detail"]["path"]).is_file(), module["detail"]["path"]


# ------------------------------------------------------------------------------ evaluator
@dataclass(frozen=True)
class Opaque:
    """A value only Azure knows (a resource property, uniqueString, a module output)."""

    what: str

    def __str__(self) -> str:
        return f"<{self.what}>"


@dataclass
class Scope:
    """One template with the parameter values it is deployed with."""

    path: Path
    params: dict[str, Any] = field(default_factory=dict)
    lambdas: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> dict:
        return parsed(self.path)

    def param(self, name: str) -> Any:
        if name in self.params:
            return self.params[name]
        default = self.model["parameters"][name].get("default")
        return None if default is None else evaluate(default, self)

    def with_lambda(self, name: str, value: Any) -> Scope:
        return Scope(self.path, self.params, {**self.lambdas, name: value})


def _is_expression(value: dict) -> bool:
    return len(value) == 1 and next(iter(value)) in ("function", "operator")


def _interpolate(text: str, scope: Scope) -> str:
    def path(dotted: str) -> Any:
        head, *keys = dotted.split(".")
        value = evaluate(head, scope)
        for key in keys:
            value = value[key] if isinstance(value, dict) and key in value else None
        return value

    def part(match: re.Match) -> str:
        inner = match.group(1).strip()
        call = re.fullmatch(r"(toUpper|toLower)\(([\w.]+)\)", inner)
        if call:
            value = path(call.group(2))
            if value is None:
                return str(Opaque(inner))
            return value.upper() if call.group(1) == "toUpper" else value.lower()
        if re.fullmatch(r"\w+", inner):
            return str(evaluate(inner, scope))
        if re.fullmatch(r"\w+(\.\w+)+", inner):  # `${c.path}`: a loop item's property
            head, *keys = inner.split(".")
            value = evaluate(head, scope)
            for key in keys:
                value = value[key] if isinstance(value, dict) and key in value else None
            if value is not None:
                return str(value)
        return str(Opaque(inner))

    return re.sub(r"\$\{([^}]*)\}", part, text)


def _access(target: Any, chain: Any, scope: Scope) -> Any:
    while True:
        if isinstance(chain, dict) and chain.get("operator", {}).get("type") == "property_accessor":
            key, chain = chain["operator"]["operands"].values()
        else:
            key, chain = chain, None
        if isinstance(target, dict) and isinstance(key, str) and key in target:
            target = target[key]
        elif isinstance(target, Opaque):
            target = Opaque(f"{target.what}.{key}")
        else:
            target = Opaque(f"{target}.{key}")
        if chain is None:
            return target


def _lambda(value: dict, scope: Scope):
    detail = value["detail"]
    return lambda item: evaluate(detail["expression"], scope.with_lambda(detail["var_1"], item))


def _function(kind: str, args: dict, scope: Scope) -> Any:
    if kind in ("map", "filter"):
        items = evaluate(args.get("arg_1", args.get("input_array")), scope)
        fn = _lambda(args.get("arg_2", args.get("expression")), scope)
        return [fn(i) for i in items] if kind == "map" else [i for i in items if fn(i)]
    if kind in ("to_object", "toObject"):
        items = evaluate(args["arg_1"], scope)
        key, value = _lambda(args["arg_2"], scope), _lambda(args["arg_3"], scope)
        return {key(i): value(i) for i in items}
    values = [evaluate(v, scope) for v in args.values()] if args else []
    if any(isinstance(v, Opaque) for v in values):
        return Opaque(f"{kind}(…)")
    simple = {
        "split": lambda s, d: s.split(d),
        "trim": str.strip,
        "to_lower": str.lower,
        "to_upper": str.upper,
        "replace": lambda s, old, new: s.replace(old, new),
        "first": lambda seq: seq[0],
        "last": lambda seq: seq[-1],
        "empty": lambda v: not v,
        "join": lambda seq, d: d.join(seq),
        "string": lambda v: str(v).lower() if isinstance(v, bool) else str(v),
        "contains": lambda container, item: item in container,
        "flatten": lambda seq: [x for inner in seq for x in inner],
        "items": lambda obj: [{"key": k, "value": v} for k, v in sorted(obj.items())],
        "int": int,
        "concat": lambda *seqs: [x for s in seqs for x in s],
        "subscription_resource_id": lambda rtype, name, *_: f"/providers/{rtype}/{name}",
        "format": lambda template, *args: re.sub(
            r"\{(\d+)\}", lambda m: str(args[int(m.group(1))]), template
        ),
    }
    if kind == "union":
        if all(isinstance(v, dict) for v in values):
            merged: dict = {}
            for v in values:
                merged.update(v)
            return merged
        out: list = []
        for v in values:
            out.extend(x for x in v if x not in out)
        return out
    if kind in simple:
        return simple[kind](*[v for v in values if v is not None] if kind != "empty" else values)
    return Opaque(f"{kind}(…)")


def _operator(kind: str, operands: dict, scope: Scope) -> Any:
    if kind == "property_accessor":
        inner = operands["operand_2"]
        inner_op = inner.get("operator", {}) if isinstance(inner, dict) else {}
        if inner_op and inner_op["type"] != "property_accessor":
            # pycep binds `c.days > 0` as `c.(days > 0)`: re-associate to `(c.days) > 0`.
            first, *rest = inner_op["operands"].items()
            accessed = {
                "operator": {
                    "type": "property_accessor",
                    "operands": {"operand_1": operands["operand_1"], "operand_2": first[1]},
                }
            }
            rebuilt = {first[0]: accessed, **dict(rest)}
            return _operator(inner_op["type"], rebuilt, scope)
        return _access(evaluate(operands["operand_1"], scope), inner, scope)
    if kind == "conditional":
        condition = evaluate(operands["condition"], scope)
        if isinstance(condition, Opaque):
            return Opaque("condition")
        branch = operands["true_value"] if condition else operands["false_value"]
        return evaluate(branch, scope)
    values = [evaluate(v, scope) for v in operands.values()]
    if any(isinstance(v, Opaque) for v in values):
        return Opaque(kind)
    ops = {
        "not": lambda a: not a,
        "or": lambda a, b: a or b,
        "and": lambda a, b: a and b,
        "greater_than": lambda a, b: a > b,
        "equals": lambda a, b: a == b,
        "substract": lambda a, b: a - b,  # pycep's spelling of `a - b`
        "index_accessor": lambda a, b: a[b],  # `obj[key]`, `list[i]`
    }
    return ops[kind](*values) if kind in ops else Opaque(kind)


def evaluate(node: Any, scope: Scope) -> Any:
    if isinstance(node, list):
        return [evaluate(v, scope) for v in node]
    if isinstance(node, dict):
        if not _is_expression(node):
            return {k.strip("'"): evaluate(v, scope) for k, v in node.items()}
        if "function" in node:
            fn = node["function"]
            return _function(fn["type"], fn.get("parameters") or {}, scope)
        op = node["operator"]
        return _operator(op["type"], op["operands"], scope)
    if isinstance(node, str):
        model = scope.model
        if node in scope.lambdas:
            return scope.lambdas[node]
        if node in model["variables"]:
            return evaluate(model["variables"][node]["value"], scope)
        if node in model["parameters"]:
            return scope.param(node)
        if node in model["resources"] or node in model["modules"]:
            return Opaque(node)
        return _interpolate(node, scope) if "${" in node else node
    return node


def module_scope(parent: Scope, symbol: str) -> Scope:
    """The scope a module runs in: its parameters as the parent passes them."""
    module = parent.model["modules"][symbol]
    params = {k: evaluate(v, parent) for k, v in module["config"]["params"].items()}
    return Scope(BICEP / module["detail"]["path"], params)


def resource_config(scope: Scope, symbol: str) -> dict:
    config = scope.model["resources"][symbol]["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def main_scope(**overrides: Any) -> Scope:
    return Scope(MAIN, dict(overrides))


def app_settings(**overrides: Any) -> dict[str, Any]:
    """The function app's settings, evaluated as main.bicep deploys them."""
    app = module_scope(main_scope(**overrides), "functionApp")
    settings = evaluate(resource_config(app, "appSettings")["properties"], app)
    assert isinstance(settings, dict), settings
    return settings


# ------------------------------------------------------------------------------ resources
def _all_resources() -> list[tuple[Path, str, dict]]:
    return [
        (path, symbol, res)
        for path in BICEP_FILES
        for symbol, res in parsed(path)["resources"].items()
        if not res.get("existing")
    ]


def test_every_resource_type_is_declared():
    declared = {res["type"] for _, _, res in _all_resources()}
    assert {
        "Microsoft.Storage/storageAccounts",
        "Microsoft.Storage/storageAccounts/blobServices",
        "Microsoft.Storage/storageAccounts/blobServices/containers",
        "Microsoft.Storage/storageAccounts/queueServices",
        "Microsoft.Storage/storageAccounts/queueServices/queues",
        "Microsoft.Storage/storageAccounts/tableServices",
        "Microsoft.Storage/storageAccounts/tableServices/tables",
        "Microsoft.Storage/storageAccounts/managementPolicies",
        "Microsoft.EventGrid/systemTopics",
        "Microsoft.EventGrid/systemTopics/eventSubscriptions",
        "Microsoft.EventGrid/topics",
        "Microsoft.Web/serverfarms",
        "Microsoft.Web/sites",
        "Microsoft.Web/sites/config",
        "Microsoft.ManagedIdentity/userAssignedIdentities",
        "Microsoft.Authorization/roleAssignments",
        "Microsoft.DocumentDB/databaseAccounts",
        "Microsoft.DocumentDB/databaseAccounts/sqlDatabases",
        "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers",
        "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments",
        "Microsoft.OperationalInsights/workspaces",
        "Microsoft.Insights/components",
        "Microsoft.CognitiveServices/accounts",
    } <= declared


def test_storage_account_is_keyless_private_and_tls12():
    storage = module_scope(main_scope(), "storage")
    props = resource_config(storage, "account")["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True


def test_containers_match_the_code_and_include_flex_and_dead_letter():
    settings = Settings.from_env({})
    storage = module_scope(main_scope(), "storage")
    containers = evaluate("containerNames", storage)
    assert set(containers[:4]) == {
        settings.upload_container,
        settings.derived_container,
        settings.claims_container,
        settings.publish.container,
    }
    main = main_scope()
    package = evaluate("deploymentContainer", main)
    assert package in containers and package.startswith("app-package-")
    assert evaluate("deadLetterContainer", main) in containers
    app = module_scope(main, "functionApp")
    assert app.params["deploymentContainer"] == package
    config = resource_config(storage, "containers")
    assert evaluate(config["properties"]["publicAccess"], storage) == "None"


def _code_queue_names(route: tuple[str, ...]) -> set[str]:
    settings = Settings.from_env({"PIPELINE_STEPS": ",".join(route)})
    names = {
        queue
        for spec in registered_step_specs(settings.pipeline_steps)
        for lane in LANES
        for queue in (
            settings.queue_name(step_name(spec), lane),
            settings.poison_queue_name(step_name(spec), lane),
        )
    }
    return names | {settings.results_queue_name()}


def test_queues_are_the_ones_the_code_derives():
    main = main_scope()
    route = tuple(evaluate("routeSpecs", main))
    assert route == Settings.from_env({}).pipeline_steps  # the parameter's default = the code's
    queues = module_scope(main, "storage").params["queueNames"]
    assert len(queues) == len(set(queues))
    assert set(queues) == _code_queue_names(route)
    assert LANES == ("live", "backfill")  # main.bicep's laneSuffixes mirror these two lanes


def test_queue_names_follow_step_names_for_module_paths_and_underscores():
    """A custom step named by module path, with an underscore: the same rule as the code."""
    main = main_scope(
        pipelineSteps="prepare,acme_vision.steps.face_match,store",
        additionalListenerSteps="analyze,transform",
    )
    queues = set(module_scope(main, "storage").params["queueNames"])
    assert "darkroom-face-match" in queues and "darkroom-face-match-backfill-poison" in queues
    code = {
        Settings.from_env({}).queue_name(step_name("acme_vision.steps.face_match"), lane)
        for lane in LANES
    }
    assert code <= queues


def test_lifecycle_rules_use_the_code_retention_defaults():
    catalog = _catalog()
    storage = module_scope(main_scope(), "storage")
    rules = {r["name"]: r for r in evaluate("lifecycleRules", storage)}
    days = {n: r["definition"]["actions"]["baseBlob"]["delete"] for n, r in rules.items()}
    prefixes = {n: r["definition"]["filters"]["prefixMatch"] for n, r in rules.items()}
    assert days["expire-originals"]["daysAfterModificationGreaterThan"] == int(
        catalog["DARKROOM_RETAIN_ORIGINALS_DAYS"].default
    )
    assert days["expire-derived"]["daysAfterModificationGreaterThan"] == int(
        catalog["DARKROOM_RETAIN_DERIVED_DAYS"].default
    )
    claims_default = catalog.get("DARKROOM_RETAIN_CLAIMS_DAYS")
    assert days["expire-claim-checks"]["daysAfterModificationGreaterThan"] == (
        int(claims_default.default) if claims_default else 7
    )
    assert prefixes["expire-originals"] == ["uploads/"]
    assert sorted(prefixes["expire-derived"]) == ["derived/", "published/"]
    assert prefixes["expire-claim-checks"] == ["claims/"]
    # the app is told the same numbers
    settings = app_settings()
    for name, rule in (
        ("DARKROOM_RETAIN_ORIGINALS_DAYS", "expire-originals"),
        ("DARKROOM_RETAIN_DERIVED_DAYS", "expire-derived"),
    ):
        assert settings[name] == str(days[rule]["daysAfterModificationGreaterThan"])


def test_zero_retention_days_means_no_rule():
    storage = module_scope(main_scope(retainOriginalsDays=0), "storage")
    names = {r["name"] for r in evaluate("lifecycleRules", storage)}
    assert "expire-originals" not in names and "expire-derived" in names


def test_cosmos_is_serverless_keyless_with_the_code_names():
    settings = Settings.from_env({})
    cosmos = module_scope(main_scope(), "cosmos")
    props = resource_config(cosmos, "account")["properties"]
    assert {"name": "EnableServerless"} in props["capabilities"]
    assert props["disableLocalAuth"] is True
    assert evaluate(resource_config(cosmos, "database")["name"], cosmos) == (
        settings.cosmos_database
    )
    container = resource_config(cosmos, "images")
    assert evaluate(container["name"], cosmos) == settings.cosmos_container
    resource = evaluate(container["properties"]["resource"], cosmos)
    assert resource["partitionKey"]["paths"] == ["/id"]


def _vector_containers(**overrides: Any) -> dict[str, dict]:
    """The vector-searched containers of cosmos.bicep (one resource loop), evaluated per item:
    container name -> its `properties.resource`."""
    cosmos = module_scope(main_scope(**overrides), "cosmos")
    loop = cosmos.model["resources"]["vectors"]["config"]["loop_type"]["detail"]
    config = resource_config(cosmos, "vectors")
    assert config["parent"] == "database"
    out = {}
    for item in evaluate(loop["array_name"], cosmos):
        inner = cosmos.with_lambda(loop["item_name"], item)
        name = evaluate(config["name"], inner)
        resource = evaluate(config["properties"]["resource"], inner)
        assert resource["id"] == name
        out[name] = resource
    return out


class _RecordingDatabase:
    def __init__(self) -> None:
        self.created: dict[str, dict] = {}

    def create_container_if_not_exists(self, name: str, **kwargs: Any) -> None:
        self.created[name] = kwargs


def _laptop_vector_containers() -> dict[str, dict]:
    """What pipeline/stores/faces.py ensure_containers creates on the laptop
    (local/provision.py), with the same arguments provision passes, recorded instead of sent."""
    from types import SimpleNamespace

    from pipeline.stores import faces
    from pipeline.vision.local import face_embedding

    database = _RecordingDatabase()
    azure = SimpleNamespace(
        settings=Settings.from_env({}),
        cosmos=SimpleNamespace(get_database_client=lambda name: database),
    )
    faces.ensure_containers(azure, face_embedding.DIMENSIONS, faces.METRIC)
    return database.created


def test_cosmos_account_enables_vector_search():
    """EnableNoSQLVectorSearch (the "Vector Search for NoSQL API" feature) next to serverless;
    vector indexes are not supported on shared-throughput databases, and this one has none."""
    cosmos = module_scope(main_scope(), "cosmos")
    capabilities = resource_config(cosmos, "account")["properties"]["capabilities"]
    assert {"name": "EnableNoSQLVectorSearch"} in capabilities
    assert {"name": "EnableServerless"} in capabilities
    assert "options" not in resource_config(cosmos, "database")["properties"]
    for symbol, res in cosmos.model["resources"].items():
        if res["type"].startswith("Microsoft.DocumentDB/"):
            assert res["api_version"] >= "2024-11-15", symbol  # has VectorEmbeddingPolicy


def test_faces_and_people_containers_have_the_code_names_and_partition_key():
    people = Settings.from_env({}).people
    containers = _vector_containers()
    assert set(containers) == {people.faces_container, people.people_container}
    assert set(containers) == {"faces", "people"}
    for name, resource in containers.items():
        assert resource["partitionKey"] == {"paths": ["/owner"], "kind": "Hash", "version": 2}, name


def test_vector_policies_equal_the_code():
    """Bicep's vector embedding policy and indexing policy of each container are exactly
    pipeline/stores/faces.py vector_policies() for its path, the embedder's dimensions and
    metric."""
    from pipeline.stores import faces
    from pipeline.vision.local import face_embedding

    assert face_embedding.DIMENSIONS == 128 and faces.METRIC == "euclidean"
    people = Settings.from_env({}).people
    containers = _vector_containers()
    for name, path in (
        (people.faces_container, "/embedding"),
        (people.people_container, "/template"),
    ):
        embedding, indexing = faces.vector_policies(path, 128, "euclidean")
        assert containers[name]["vectorEmbeddingPolicy"] == embedding, name
        assert containers[name]["indexingPolicy"] == indexing, name
        assert indexing["vectorIndexes"] == [{"path": path, "type": "quantizedFlat"}]
        assert {"path": f"{path}/*"} in indexing["excludedPaths"]
    assert faces.EMBEDDING_PATH == "/embedding" and faces.TEMPLATE_PATH == "/template"


def test_vector_containers_equal_what_the_laptop_creates():
    """Azure (Bicep) and the laptop (ensure_containers) create the same two containers: names,
    partition key, vector embedding policy and indexing policy."""
    azure = _vector_containers()
    laptop = _laptop_vector_containers()
    assert set(azure) == set(laptop)
    for name, created in laptop.items():
        assert dict(created["partition_key"]) == azure[name]["partitionKey"], name
        assert created["vector_embedding_policy"] == azure[name]["vectorEmbeddingPolicy"], name
        assert created["indexing_policy"] == azure[name]["indexingPolicy"], name


class _AnyService:
    """Stands in for the blob, queue and table service clients: every call succeeds."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: {}


def _laptop_cosmos_containers(env: dict[str, str] | None = None) -> dict[str, dict]:
    """Every Cosmos container local/provision.py ensure_resources creates on the laptop, with
    the arguments it passes, recorded instead of sent (settings from `env`)."""
    from types import SimpleNamespace

    from local import provision

    database = _RecordingDatabase()
    azure = SimpleNamespace(
        settings=Settings.from_env(env or {}),
        blob_service=_AnyService(),
        queue_service=_AnyService(),
        table_service=_AnyService(),
        cosmos=SimpleNamespace(
            create_database_if_not_exists=lambda name: database,
            get_database_client=lambda name: database,
        ),
    )
    provision.ensure_resources(azure)
    return database.created


def _images_container(**overrides: Any) -> dict:
    cosmos = module_scope(main_scope(**overrides), "cosmos")
    resource = evaluate(resource_config(cosmos, "images")["properties"]["resource"], cosmos)
    assert resource["id"] == Settings.from_env({}).cosmos_container
    return resource


def _assert_same_images_container(azure: dict, laptop: dict) -> None:
    """Bicep's images container (`properties.resource`) and provision's keyword arguments
    describe the same container: the same keys, and the same values."""
    assert dict(laptop["partition_key"]) == azure["partitionKey"]
    assert laptop["full_text_policy"] == azure["fullTextPolicy"]
    assert laptop["indexing_policy"] == azure["indexingPolicy"]
    assert ("vector_embedding_policy" in laptop) == ("vectorEmbeddingPolicy" in azure)
    if "vectorEmbeddingPolicy" in azure:
        assert laptop["vector_embedding_policy"] == azure["vectorEmbeddingPolicy"]


_EMBEDDINGS_ON = {
    "DARKROOM_OPENAI_ENDPOINT": "https://oai.example",
    "DARKROOM_OPENAI_EMBEDDING_DEPLOYMENT": "text-embedding-3-small",
}


def test_images_container_has_full_text_but_no_vector_by_default():
    """Search by words (GET /api/images?q=) always: the full-text policy and index on
    /search/text are the same on Azure (Bicep) and on the laptop (provision), both from
    pipeline/stores/results.py. Without an embedding deployment there is no vector part at all
    (no policy, no index, no excluded path): a vector policy cannot be added to an existing
    container, so an environment whose images container predates it keeps deploying unchanged."""
    from pipeline.stores import results

    assert _main_default("enableOpenAiEmbeddings") is False
    azure = _images_container()
    laptop = _laptop_cosmos_containers()[Settings.from_env({}).cosmos_container]
    _assert_same_images_container(azure, laptop)
    assert azure["partitionKey"]["paths"] == ["/id"]
    assert results.SEARCH_TEXT_PATH == "/search/text"
    assert azure["fullTextPolicy"] == {
        "defaultLanguage": "en-US",
        "fullTextPaths": [{"path": "/search/text", "language": "en-US"}],
    }
    indexing = azure["indexingPolicy"]
    assert indexing["fullTextIndexes"] == [{"path": "/search/text"}]
    # the searched text stays indexed; what is excluded is never filtered on
    excluded = [p["path"] for p in indexing["excludedPaths"]]
    assert {"path": "/*"} in indexing["includedPaths"]
    assert not [p for p in excluded if "/search/text".startswith(p.rstrip("/*?"))]
    assert "/analysis/text/*" in excluded
    # no vector: the keys are absent (not null, not empty)
    assert "vectorEmbeddingPolicy" not in azure
    assert "vectorIndexes" not in indexing
    assert not [p for p in excluded if p.startswith("/search/vector")]
    assert "vector_embedding_policy" not in laptop
    assert results.images_container_policies(None) == {
        "full_text_policy": azure["fullTextPolicy"],
        "indexing_policy": azure["indexingPolicy"],
    }
    assert results.images_container_policies(0) == results.images_container_policies(None)
    # the module's own default is "no vector" too
    cosmos = parsed(BICEP / "modules" / "cosmos.bicep")
    assert cosmos["parameters"]["searchVectorDimensions"]["default"] == 0


def test_images_container_has_the_caption_vector_with_embeddings():
    """enableOpenAiEmbeddings (DARKROOM_OPENAI_EMBEDDING_DEPLOYMENT on the laptop) adds the
    vector policy and a quantizedFlat index on /search/vector, excluded from the range index,
    next to the same full-text policy and index; Azure and the laptop still agree."""
    from pipeline.stores import results

    azure = _images_container(enableOpenAiEmbeddings=True)
    laptop = _laptop_cosmos_containers(_EMBEDDINGS_ON)[Settings.from_env({}).cosmos_container]
    _assert_same_images_container(azure, laptop)
    assert azure["fullTextPolicy"] == _images_container()["fullTextPolicy"]
    indexing = azure["indexingPolicy"]
    assert indexing["fullTextIndexes"] == [{"path": "/search/text"}]
    assert indexing["vectorIndexes"] == [{"path": "/search/vector", "type": "quantizedFlat"}]
    excluded = [p["path"] for p in indexing["excludedPaths"]]
    assert "/search/vector/*" in excluded and "/analysis/text/*" in excluded
    assert not [p for p in excluded if "/search/text".startswith(p.rstrip("/*?"))]
    # everything else of the indexing policy is the default's
    without_vector = {k: v for k, v in indexing.items() if k != "vectorIndexes"}
    without_vector["excludedPaths"] = [
        p for p in indexing["excludedPaths"] if p["path"] != "/search/vector/*"
    ]
    assert without_vector == _images_container()["indexingPolicy"]
    (vector,) = azure["vectorEmbeddingPolicy"]["vectorEmbeddings"]
    assert vector == {
        "path": "/search/vector",
        "dataType": "float32",
        "distanceFunction": "cosine",  # pipeline/api/search.py reads a similarity floor
        "dimensions": 1536,
    }
    assert results.images_container_policies(1536) == {
        "full_text_policy": azure["fullTextPolicy"],
        "vector_embedding_policy": azure["vectorEmbeddingPolicy"],
        "indexing_policy": azure["indexingPolicy"],
    }


def test_images_container_vector_length_is_the_embedding_deployments():
    """openAiEmbeddingDimensions makes the images container's vectors that long when embeddings
    are on, and tells the app (DARKROOM_OPENAI_EMBEDDING_DIMENSIONS); alone it adds no vector.
    The laptop does the same from the settings."""
    from pipeline.stores import results

    assert "vectorEmbeddingPolicy" not in _images_container(openAiEmbeddingDimensions=512)
    azure = _images_container(enableOpenAiEmbeddings=True, openAiEmbeddingDimensions=512)
    expected = results.images_container_policies(512)
    assert azure["vectorEmbeddingPolicy"] == expected["vector_embedding_policy"]
    assert azure["indexingPolicy"] == expected["indexing_policy"]
    (vector,) = azure["vectorEmbeddingPolicy"]["vectorEmbeddings"]
    assert vector["dimensions"] == 512
    laptop = _laptop_cosmos_containers(
        {**_EMBEDDINGS_ON, "DARKROOM_OPENAI_EMBEDDING_DIMENSIONS": "512"}
    )[Settings.from_env({}).cosmos_container]
    _assert_same_images_container(azure, laptop)
    # dimensions without a deployment: no vector on the laptop either
    only_dimensions = _laptop_cosmos_containers({"DARKROOM_OPENAI_EMBEDDING_DIMENSIONS": "512"})
    assert "vector_embedding_policy" not in only_dimensions[Settings.from_env({}).cosmos_container]
    settings = app_settings(enableOpenAiEmbeddings=True, openAiEmbeddingDimensions=512)
    assert settings["DARKROOM_OPENAI_EMBEDDING_DIMENSIONS"] == "512"
    assert Settings.from_env({"DARKROOM_OPENAI_EMBEDDING_DIMENSIONS": "512"}).analysis.openai
    assert _main_default("openAiEmbeddingDimensions") == int(
        _catalog()["DARKROOM_OPENAI_EMBEDDING_DIMENSIONS"].default
    )


def test_cosmos_account_enables_full_text_search_with_an_api_that_declares_it():
    """The full-text index needs the account feature "Full Text & Hybrid Search for NoSQL API"
    (capability EnableNoSQLFullTextSearch), and IndexingPolicy.fullTextIndexes is in the ARM
    schema from Microsoft.DocumentDB 2025-10-15 (bicep-types-az generated/cosmos-db/
    microsoft.documentdb/2025-10-15/types.md; 2025-04-15 has fullTextPolicy only)."""
    cosmos = module_scope(main_scope(), "cosmos")
    capabilities = resource_config(cosmos, "account")["properties"]["capabilities"]
    assert {"name": "EnableNoSQLFullTextSearch"} in capabilities
    assert {"name": "EnableNoSQLVectorSearch"} in capabilities
    images = cosmos.model["resources"]["images"]
    assert images["api_version"] >= "2025-10-15"
    for symbol, res in cosmos.model["resources"].items():
        assert res["api_version"] == images["api_version"], symbol  # one schema in the module


def test_faces_container_names_flow_to_the_app():
    settings = app_settings()
    assert settings["DARKROOM_FACES_CONTAINER"] == "faces"
    assert settings["DARKROOM_PEOPLE_CONTAINER"] == "people"
    renamed = {"facesContainerName": "faces2", "peopleContainerName": "people2"}
    assert set(_vector_containers(**renamed)) == {"faces2", "people2"}
    settings = app_settings(**renamed)
    assert settings["DARKROOM_FACES_CONTAINER"] == "faces2"
    assert settings["DARKROOM_PEOPLE_CONTAINER"] == "people2"
    code = Settings.from_env(
        {k: settings[k] for k in ("DARKROOM_FACES_CONTAINER", "DARKROOM_PEOPLE_CONTAINER")}
    )
    assert (code.people.faces_container, code.people.people_container) == ("faces2", "people2")
    outputs = parsed(MAIN)["outputs"]
    assert "DARKROOM_FACES_CONTAINER" in outputs and "DARKROOM_PEOPLE_CONTAINER" in outputs


def test_app_cosmos_role_covers_every_container():
    """The data-plane role is scoped to the whole account, so it covers faces and people too."""
    roles = module_scope(main_scope(), "roles")
    config = resource_config(roles, "appCosmosData")
    assert evaluate(config["properties"]["scope"], roles) == Opaque("cosmos.id")


def test_default_route_includes_recognize():
    from pipeline.settings import DEFAULT_ROUTE

    route = "prepare,analyze,recognize,transform,store"
    assert route == DEFAULT_ROUTE
    assert parsed(MAIN)["parameters"]["pipelineSteps"]["default"] == route
    params = json.loads((BICEP / "main.parameters.json").read_text())["parameters"]
    assert params["pipelineSteps"]["value"] == "${PIPELINE_STEPS=" + route + "}"
    assert app_settings()["PIPELINE_STEPS"] == route
    queues = set(module_scope(main_scope(), "storage").params["queueNames"])
    assert {"darkroom-recognize", "darkroom-recognize-backfill-poison"} <= queues


def test_application_insights_is_aad_only():
    monitoring = module_scope(main_scope(), "monitoring")
    assert resource_config(monitoring, "appInsights")["properties"]["DisableLocalAuth"] is True
    settings = app_settings()
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in settings
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        f"ClientId={Opaque('identity.properties.clientId')};Authorization=AAD"
    )


def test_flex_consumption_plan_and_app():
    main = main_scope()
    app = module_scope(main, "functionApp")
    plan = resource_config(app, "plan")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = resource_config(app, "app")
    config = evaluate(site["properties"]["functionAppConfig"], app)
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["scaleAndConcurrency"]["instanceMemoryMB"] == 2048
    assert isinstance(config["scaleAndConcurrency"]["maximumInstanceCount"], int)
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"]["type"] == "UserAssignedIdentity"
    assert evaluate(site["identity"]["type"], app) == "UserAssigned"
    tags = evaluate(site["tags"], app)
    assert tags["azd-service-name"] == "api"
    assert parsed(MAIN)["parameters"]["instanceMemoryMB"]["default"] == 2048


# ------------------------------------------------------------------------------ app settings
def _catalog() -> dict:
    from pipeline.settings import setting_catalog  # added by the settings issue

    return setting_catalog()


def _binding_expression_settings() -> set[str]:
    """`%NAME%` in string literals of the code (docstrings aside) that wires the bindings."""
    names: set[str] = set()
    for path in (ROOT / "function_app.py", ROOT / "pipeline" / "settings.py"):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        }
        for node in ast.walk(tree):
            string = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if string and id(node) not in docstrings:
                names |= set(re.findall(r"%([A-Za-z_][A-Za-z0-9_]*)%", node.value))
    return names


@pytest.mark.parametrize("features", [{}, ALL_FEATURES], ids=["defaults", "all-features"])
def test_no_key_material_and_no_flex_rejected_setting(features):
    settings = app_settings(**features)
    assert not FLEX_REJECTED_SETTINGS & set(settings)
    for name, value in settings.items():
        for marker in KEY_MATERIAL:
            assert marker not in str(value), f"{name} carries {marker}"
    assert not any(name.endswith("_KEY") or name.endswith("_SECRET") for name in settings)


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(BICEP).as_posix())
def test_no_key_material_anywhere_in_bicep(path):
    code = _code_without_comments(path.read_text())
    for marker in (*KEY_MATERIAL, "listAccountSas(", "FUNCTIONS_WORKER_RUNTIME"):
        assert marker not in code, f"{path.name} uses {marker}"


def test_identity_based_connections():
    settings = app_settings()
    for conn in ("AzureWebJobsStorage", "DARKROOM_STORAGE"):
        for service in ("blob", "queue", "table"):
            assert str(settings[f"{conn}__{service}ServiceUri"]).endswith(
                f"primaryEndpoints.{service}>"
            )
        assert settings[f"{conn}__credential"] == "managedidentity"
        assert settings[f"{conn}__clientId"] == Opaque("identity.properties.clientId")
    assert settings["DARKROOM_COSMOS__accountEndpoint"] == Opaque("cosmos.outputs.endpoint")
    assert settings["DARKROOM_COSMOS__credential"] == "managedidentity"
    assert settings["DARKROOM_COSMOS__clientId"] == Opaque("identity.properties.clientId")
    assert "DARKROOM_STORAGE" not in settings and "DARKROOM_COSMOS" not in settings
    assert "AzureWebJobsStorage" not in settings


def test_binding_expression_settings_are_set_to_the_code_defaults():
    settings = app_settings()
    code = Settings.from_env({})
    required = _binding_expression_settings() | {"PIPELINE_STEPS"}
    assert {"DARKROOM_QUEUE_PREFIX", "DARKROOM_UPLOAD_CONTAINER"} <= required
    assert required <= set(settings)
    assert settings["PIPELINE_STEPS"] == ",".join(code.pipeline_steps)
    assert settings["DARKROOM_QUEUE_PREFIX"] == code.queue_prefix
    assert settings["DARKROOM_UPLOAD_CONTAINER"] == code.upload_container


def test_optional_endpoints_only_when_enabled():
    plain = app_settings()
    assert "DARKROOM_AZURE_VISION_ENDPOINT" not in plain
    assert "DARKROOM_EVENTGRID_TOPIC_ENDPOINT" not in plain
    full = app_settings(**ALL_FEATURES)
    assert full["DARKROOM_AZURE_VISION_ENDPOINT"] == Opaque("vision.outputs.endpoint")
    assert full["DARKROOM_EVENTGRID_TOPIC_ENDPOINT"] == Opaque("eventsTopic.outputs.endpoint")
    assert full["DARKROOM_TEXT_PROVIDER"] == "azure" and full["DARKROOM_TAGS_PROVIDER"] == "local"


def test_analyzer_providers_cover_the_code_capabilities():
    settings = app_settings()
    code = Settings.from_env({}).analysis
    assert settings["DARKROOM_ANALYZERS"] == ",".join(code.capabilities)
    for capability in code.capabilities:
        assert settings[f"DARKROOM_{capability.upper()}_PROVIDER"] == "local"


def test_required_settings_are_set_by_bicep():
    settings = app_settings()
    missing = sorted(
        name
        for name, spec in _catalog().items()
        if spec.required and not spec.local_only and name not in settings
    )
    assert missing == []


def test_every_bicep_setting_is_read_by_the_code_or_the_host():
    catalog = _catalog()
    unknown = sorted(
        name
        for name in app_settings(**ALL_FEATURES)
        if name not in catalog
        and not name.startswith(HOST_SETTING_PREFIXES)
        and name not in HOST_SETTINGS
    )
    assert unknown == []


def test_no_secret_or_local_only_setting_is_set_by_bicep():
    catalog = _catalog()
    settings = set(app_settings(**ALL_FEATURES))
    assert sorted(n for n in settings if n in catalog and catalog[n].secret) == []
    assert sorted(n for n in settings if n in catalog and catalog[n].local_only) == []


def test_secret_settings_come_only_from_secure_parameters():
    """API/admin key hashes: @secure() parameters with an empty default, passed to the module's
    @secure() object (so no deployment records them), set only when given."""
    catalog = _catalog()
    main_params = parsed(MAIN)["parameters"]
    for setting, param in SECRET_PARAMS.items():
        assert catalog[setting].secret
        assert {"type": "secure"} in main_params[param]["decorators"], param
        assert main_params[param].get("default", "") == "", param
    keys = {param: API_KEY_ENTRY for param in SECRET_PARAMS.values()}
    app = module_scope(main_scope(**ALL_FEATURES, **keys), "functionApp")
    module_params = parsed(app.path)["parameters"]
    assert {"type": "secure"} in module_params["secretSettings"]["decorators"]
    assert module_params["secretSettings"].get("default", {}) == {}
    assert app.params["secretSettings"] == dict.fromkeys(SECRET_PARAMS, API_KEY_ENTRY)
    plain = app.params["pipelineSettings"]
    assert sorted(n for n in plain if n in catalog and catalog[n].secret) == []
    settings = app_settings(**ALL_FEATURES, **keys)
    assert {n for n in settings if n in catalog and catalog[n].secret} == set(SECRET_PARAMS)
    assert settings["DARKROOM_API_KEYS"] == API_KEY_ENTRY
    # nothing returns them
    for output in parsed(MAIN)["outputs"].values():
        assert not set(SECRET_PARAMS.values()) & set(re.findall(r"\w+", json.dumps(output)))


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(BICEP).as_posix())
def test_no_secret_parameter_has_a_default(path):
    """A @secure() parameter defaults to nothing or to empty; a parameter named like a secret
    (key, secret, password, token) is @secure()."""
    for name, param in parsed(path)["parameters"].items():
        secure = {"type": "secure"} in param.get("decorators", [])
        if secure:
            assert param.get("default") in (None, "", {}), f"{path.name}: {name}"
        if re.search(r"(?i)(key|secret|password|token)s?$", name):
            assert secure, f"{path.name}: {name} looks secret but is not @secure()"


# Deliberately different from the code's default, with the reason.
DEPLOYED_DEFAULTS = {
    # code: no cross-origin callers (the laptop); Azure: the app's own origin, whose page PUTs
    # to blob storage (another origin) — checked in test_cors_origins_default_to_the_app
    "DARKROOM_CORS_ORIGINS",
}


def _same_value(bicep: str, code: str) -> bool:
    """Equal as text, or as numbers (Bicep has no decimals: "12" is the code's "12.0")."""
    try:
        return bicep == code or float(bicep) == float(code)
    except ValueError:
        return False


def test_bicep_defaults_equal_the_code_defaults():
    catalog = _catalog()
    differ = {
        name: (value, catalog[name].default)
        for name, value in app_settings().items()
        if name in catalog
        and name not in DEPLOYED_DEFAULTS
        and isinstance(value, str)
        and catalog[name].default is not None
        and not _same_value(value, catalog[name].default)
    }
    assert differ == {}


# ------------------------------------------------------------------------------ roles
def _role_assignments(scope: Scope) -> list[tuple[str, str, Any]]:
    """(role id, scope symbol, principal) for every ARM role assignment in one template."""
    out = []
    for symbol, res in scope.model["resources"].items():
        if res["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        outer = res["config"]
        condition = outer.get("condition")
        if condition is not None and not evaluate(condition, scope):
            continue
        config = resource_config(scope, symbol)
        loop = outer.get("loop_type")
        items = [None]
        if loop:
            items = evaluate(loop["detail"]["array_name"], scope)
        for item in items:
            inner = scope.with_lambda(loop["detail"]["item_name"], item) if loop else scope
            role = evaluate(config["properties"]["roleDefinitionId"], inner)
            principal = evaluate(config["properties"]["principalId"], inner)
            out.append((role.rsplit("/", 1)[-1], _symbol(config["scope"]), principal))
    return out


def _symbol(node: Any) -> str:
    """A resource reference as written: `storage` or `storage::blobService::deadLetters`."""
    if (
        isinstance(node, dict)
        and node.get("operator", {}).get("type") == "nested_resource_accessor"
    ):
        operands = node["operator"]["operands"]
        return f"{_symbol(operands['operand_1'])}::{_symbol(operands['operand_2'])}"
    return node


def _scope_type(scope: Scope, symbol: str) -> str:
    head = symbol.split("::")[-1]
    resources = scope.model["resources"]
    key = next(k for k in resources if k == head or k.endswith(f"__{head}"))
    return resources[key]["type"]


def test_app_identity_holds_exactly_its_roles():
    main = main_scope(**ALL_FEATURES)
    roles = module_scope(main, "roles")
    assert parsed(MAIN)["modules"]["roles"]["config"]["params"]["identityPrincipalId"] == {
        "operator": {
            "type": "property_accessor",
            "operands": {
                "operand_1": "identity",
                "operand_2": {
                    "operator": {
                        "type": "property_accessor",
                        "operands": {"operand_1": "properties", "operand_2": "principalId"},
                    }
                },
            },
        }
    }
    identity = roles.params["identityPrincipalId"]
    granted = {
        (role, _scope_type(roles, target))
        for role, target, principal in _role_assignments(roles)
        if principal == identity
    }
    # and on each Azure AI services account, the role that account needs (the account's kind)
    for service in _ai_services(**ALL_FEATURES).values():
        for role, target, principal in _role_assignments(service):
            assert principal == identity
            assert _scope_type(service, target) == "Microsoft.CognitiveServices/accounts"
            granted.add((role, service.params["kind"]))
    storage = "Microsoft.Storage/storageAccounts"
    assert granted == {
        (STORAGE_BLOB_DATA_OWNER, storage),  # includes generateUserDelegationKey: no Delegator
        (STORAGE_QUEUE_DATA_CONTRIBUTOR, storage),
        (STORAGE_TABLE_DATA_CONTRIBUTOR, storage),
        (MONITORING_METRICS_PUBLISHER, "Microsoft.Insights/components"),
        (COGNITIVE_SERVICES_USER, "ComputerVision"),
        (COGNITIVE_SERVICES_USER, "FormRecognizer"),
        (COGNITIVE_SERVICES_USER, "Face"),
        (COGNITIVE_SERVICES_OPENAI_USER, "AIServices"),
        (EVENTGRID_DATA_SENDER, "Microsoft.EventGrid/topics"),
    }


def test_optional_roles_only_with_their_resources():
    roles = module_scope(main_scope(), "roles")
    granted = {role for role, _, _ in _role_assignments(roles)}
    assert EVENTGRID_DATA_SENDER not in granted
    assert STORAGE_BLOB_DATA_OWNER in granted
    assert _ai_services() == {}  # no AI services account, so no role on one


def test_deploying_user_gets_data_roles_when_given():
    user = ALL_FEATURES["principalId"]
    roles = module_scope(main_scope(**ALL_FEATURES), "roles")
    mine = {role for role, _, principal in _role_assignments(roles) if principal == user}
    assert mine == {
        STORAGE_BLOB_DATA_OWNER,
        STORAGE_QUEUE_DATA_CONTRIBUTOR,
        STORAGE_TABLE_DATA_CONTRIBUTOR,
    }
    nobody = module_scope(main_scope(), "roles")
    assert all(principal != "" for _, _, principal in _role_assignments(nobody))


def test_cosmos_access_is_a_sql_role_assignment():
    roles = module_scope(main_scope(**ALL_FEATURES), "roles")
    identity = roles.params["identityPrincipalId"]
    sql = [
        resource_config(roles, symbol)
        for symbol, res in roles.model["resources"].items()
        if res["type"] == "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments"
    ]
    principals = {evaluate(c["properties"]["principalId"], roles) for c in sql}
    assert principals == {identity, ALL_FEATURES["principalId"]}
    for config in sql:
        role = evaluate(config["properties"]["roleDefinitionId"], roles)
        assert role.endswith(f"/sqlRoleDefinitions/{COSMOS_DATA_CONTRIBUTOR}")
    # and no ARM role on the Cosmos account
    for _, target, _ in _role_assignments(roles):
        assert not _scope_type(roles, target).startswith("Microsoft.DocumentDB")


def test_system_topic_identity_may_write_dead_letters_only():
    topic = module_scope(main_scope(), "systemTopic")
    assignments = _role_assignments(topic)
    assert [(role, target) for role, target, _ in assignments] == [
        (STORAGE_BLOB_DATA_CONTRIBUTOR, "storage::blobService::deadLetters")
    ]
    props = resource_config(topic, "systemTopic")
    assert props["identity"] == {"type": "SystemAssigned"}
    assert props["properties"]["topicType"] == "Microsoft.Storage.StorageAccounts"


# ------------------------------------------------------------------------------ Azure AI services
COGNITIVE_ACCOUNT = BICEP / "modules" / "cognitive-account.bicep"


class AIService(NamedTuple):
    kind: str  # the account's kind
    setting: str  # the app setting with its endpoint
    role: str  # the identity's role on it
    switch: str  # main.bicep's parameter that deploys it
    provider: str  # the DARKROOM_<CAPABILITY>_PROVIDER value that deploys it (analyzerProviders)
    output: str  # main.bicep's output with its endpoint


# main.bicep module symbol -> the service
AI_SERVICES = {
    "vision": AIService(
        "ComputerVision",
        "DARKROOM_AZURE_VISION_ENDPOINT",
        COGNITIVE_SERVICES_USER,
        "enableAzureVision",
        "azure",
        "AZURE_VISION_ENDPOINT",
    ),
    "docIntel": AIService(
        "FormRecognizer",
        "DARKROOM_DOCINTEL_ENDPOINT",
        COGNITIVE_SERVICES_USER,
        "enableDocIntel",
        "docintel",
        "AZURE_DOCINTEL_ENDPOINT",
    ),
    "faceApi": AIService(
        "Face",
        "DARKROOM_FACE_ENDPOINT",
        COGNITIVE_SERVICES_USER,
        "enableFace",
        "face",
        "AZURE_FACE_ENDPOINT",
    ),
    "openAi": AIService(
        "AIServices",
        "DARKROOM_OPENAI_ENDPOINT",
        COGNITIVE_SERVICES_OPENAI_USER,
        "enableOpenAi",
        "openai",
        "AZURE_OPENAI_ENDPOINT",
    ),
}
# A capability each provider answers in the code (pipeline.vision.capabilities).
PROVIDER_CAPABILITY = {"azure": "objects", "docintel": "text", "face": "faces", "openai": "tags"}


def _ai_services(**overrides: Any) -> dict[str, Scope]:
    """The Azure AI services accounts main.bicep deploys with these parameters: module symbol ->
    modules/cognitive-account.bicep with the parameters main.bicep gives it."""
    main = main_scope(**overrides)
    out = {}
    for symbol in AI_SERVICES:
        module = main.model["modules"][symbol]["config"]
        assert (BICEP / main.model["modules"][symbol]["detail"]["path"]) == COGNITIVE_ACCOUNT
        if evaluate(module["condition"], main):
            params = {k: evaluate(v, main) for k, v in module["config"]["params"].items()}
            out[symbol] = Scope(COGNITIVE_ACCOUNT, params)
    return out


def _main_default(name: str) -> Any:
    return parsed(MAIN)["parameters"][name]["default"]


def test_no_ai_service_account_by_default():
    assert _ai_services() == {}
    settings = app_settings()
    assert not {service.setting for service in AI_SERVICES.values()} & set(settings)
    assert not [name for name in settings if name.startswith("DARKROOM_OPENAI_")]
    for service in AI_SERVICES.values():
        assert evaluate(parsed(MAIN)["outputs"][service.output]["value"], main_scope()) == ""
    assert all(_main_default(service.switch) is False for service in AI_SERVICES.values())
    assert _main_default("enableOpenAiEmbeddings") is False
    assert _main_default("analyzerProviders") == ""


@pytest.mark.parametrize("symbol", AI_SERVICES)
def test_each_ai_service_and_its_endpoint_setting_only_when_switched_on(symbol):
    """Its switch, or a capability given to its provider, deploys that account and nothing
    else; the app gets its endpoint (no key) exactly then."""
    service = AI_SERVICES[symbol]
    capability = PROVIDER_CAPABILITY[service.provider]
    for overrides in (
        {service.switch: True},
        {"analyzerProviders": f"{capability}={service.provider}"},
    ):
        assert set(_ai_services(**overrides)) == {symbol}, overrides
        settings = app_settings(**overrides)
        assert settings[service.setting] == Opaque(f"{symbol}.outputs.endpoint")
        others = {s.setting for sym, s in AI_SERVICES.items() if sym != symbol}
        assert not others & set(settings), overrides
        output = evaluate(parsed(MAIN)["outputs"][service.output]["value"], main_scope(**overrides))
        assert output == Opaque(f"{symbol}.outputs.endpoint")
    provider_setting = f"DARKROOM_{capability.upper()}_PROVIDER"
    assert (
        app_settings(analyzerProviders=f"{capability}={service.provider}")[provider_setting]
        == service.provider
    )
    assert app_settings(**{service.switch: True})[provider_setting] == "local"  # on, unused


def test_ai_service_accounts_are_keyless_with_a_subdomain_and_one_role_each():
    services = _ai_services(**ALL_FEATURES)
    assert set(services) == set(AI_SERVICES)
    identity = module_scope(main_scope(**ALL_FEATURES), "roles").params["identityPrincipalId"]
    names = set()
    for symbol, scope in services.items():
        service = AI_SERVICES[symbol]
        assert scope.params["kind"] == service.kind
        account = resource_config(scope, "account")
        assert evaluate(account["kind"], scope) == service.kind
        properties = evaluate(account["properties"], scope)
        assert properties["disableLocalAuth"] is True  # no keys: Entra ID tokens only
        # a custom subdomain is what token authentication needs
        assert properties["customSubDomainName"] == scope.params["name"]
        assert [(role, target) for role, target, _ in _role_assignments(scope)] == [
            (service.role, "account")
        ]
        assert {principal for _, _, principal in _role_assignments(scope)} == {identity}
        config = resource_config(scope, "roles")
        assert evaluate(config["properties"]["principalType"], scope) == "ServicePrincipal"
        names.add(scope.params["name"])
    assert len(names) == len(AI_SERVICES)  # each its own (globally unique) subdomain
    kinds = parsed(COGNITIVE_ACCOUNT)["parameters"]["kind"]["decorators"]
    allowed = next(d["argument"] for d in kinds if d["type"] == "allowed")
    assert sorted(allowed) == sorted(service.kind for service in AI_SERVICES.values())


def test_vision_role_assignment_keeps_its_name():
    """The Vision account's role assignment moved from roles.bicep into its account's module
    with the name it had, guid(resource group id, account name, principal, role): an existing
    deployment keeps its assignment instead of failing on a second one for the same role."""
    name = parsed(COGNITIVE_ACCOUNT)["resources"]["roles"]["config"]["config"]["name"]
    arguments = name["function"]["parameters"]
    assert name["function"]["type"] == "guid"
    assert arguments["base_string"]["operator"]["operands"]["operand_1"]["function"]["type"] == (
        "resource_group"
    )
    assert [arguments[f"extra_string_{i}"] for i in (1, 2, 3)] == ["name", "principalId", "role"]
    vision = _ai_services(enableAzureVision=True)["vision"]
    assert vision.params["name"] == evaluate("visionName", main_scope())
    assert vision.params["roleDefinitionIds"] == [COGNITIVE_SERVICES_USER]


def _openai_settings(**overrides: Any) -> tuple[dict, Any]:
    """The app's DARKROOM_OPENAI_* settings and what the code reads from them."""
    from pipeline.settings import _read

    settings = {
        k: v
        for k, v in app_settings(**overrides).items()
        if k.startswith("DARKROOM_OPENAI_") and isinstance(v, str)
    }
    code, reader = _read(dict(settings))
    assert not reader.problems
    return settings, code.analysis.openai


def test_openai_chat_deployment_and_its_settings():
    model, version = _main_default("openAiModelName"), _main_default("openAiModelVersion")
    scope = _ai_services(enableOpenAi=True)["openAi"]
    assert scope.params["deployments"] == [
        {
            "name": model,
            "model": model,
            "version": version,
            "sku": "GlobalStandard",
            "capacity": _main_default("openAiCapacity"),
        }
    ]
    settings, code = _openai_settings(enableOpenAi=True)
    assert settings == {
        "DARKROOM_OPENAI_DEPLOYMENT": model,
        "DARKROOM_OPENAI_MODEL": f"{model}@{version}",  # name@version: the model identity
    }
    assert (code.deployment, code.model) == (model, f"{model}@{version}")
    assert code.embedding_deployment is None
    # the deployment resource: an OpenAI-format model, created one at a time on the account
    resource = parsed(COGNITIVE_ACCOUNT)["resources"]["modelDeployments"]
    assert {"type": "batchSize", "argument": 1} in resource["decorators"]
    assert resource["config"]["loop_type"]["detail"]["array_name"] == "deployments"
    config = resource_config(scope, "modelDeployments")
    item = scope.with_lambda("d", scope.params["deployments"][0])
    deployment = evaluate({k: config[k] for k in ("name", "sku", "properties")}, item)
    assert deployment["name"] == model
    assert deployment["sku"] == {"name": "GlobalStandard", "capacity": 50}
    assert deployment["properties"]["model"] == {
        "format": "OpenAI",
        "name": model,
        "version": version,
    }
    assert deployment["properties"]["versionUpgradeOption"] == "OnceCurrentVersionExpired"
    assert _ai_services(enableDocIntel=True)["docIntel"].params.get("deployments", []) == []


def test_openai_parameters_reach_the_deployment_and_the_model_identity():
    overrides = {
        "enableOpenAi": True,
        "openAiModelName": "gpt-4.1-mini",
        "openAiModelVersion": "2025-04-14",
        "openAiSkuName": "DataZoneStandard",
        "openAiCapacity": 200,
        "openAiLocation": "swedencentral",
    }
    scope = _ai_services(**overrides)["openAi"]
    assert scope.params["location"] == "swedencentral"
    assert scope.params["deployments"][0] == {
        "name": "gpt-4.1-mini",
        "model": "gpt-4.1-mini",
        "version": "2025-04-14",
        "sku": "DataZoneStandard",
        "capacity": 200,
    }
    _, code = _openai_settings(**overrides)
    assert (code.deployment, code.model) == ("gpt-4.1-mini", "gpt-4.1-mini@2025-04-14")
    assert _ai_services(enableOpenAi=True)["openAi"].params["location"] == evaluate(
        "location", main_scope()
    )  # empty = the deployment's region


def test_embedding_deployment_and_its_settings_only_when_switched_on():
    model = _main_default("openAiEmbeddingModelName")
    assert (model, _main_default("openAiEmbeddingModelVersion")) == ("text-embedding-3-small", "1")
    services = _ai_services(enableOpenAiEmbeddings=True)
    assert set(services) == {"openAi"}  # the account comes with it, and its chat deployment
    deployments = services["openAi"].params["deployments"]
    assert [d["model"] for d in deployments] == [_main_default("openAiModelName"), model]
    assert deployments[1]["sku"] == "GlobalStandard"
    settings, code = _openai_settings(enableOpenAiEmbeddings=True)
    assert settings["DARKROOM_OPENAI_EMBEDDING_DEPLOYMENT"] == model
    assert settings["DARKROOM_OPENAI_EMBEDDING_DIMENSIONS"] == "1536"
    assert (code.embedding_deployment, code.embedding_dimensions) == (model, 1536)
    # the Bicep default is the code's, and the images container's vector length
    assert _catalog()["DARKROOM_OPENAI_EMBEDDING_DIMENSIONS"].default == "1536"
    assert len(_ai_services(enableOpenAi=True)["openAi"].params["deployments"]) == 1
    assert "DARKROOM_OPENAI_EMBEDDING_DEPLOYMENT" not in app_settings(enableOpenAi=True)


def test_analyzer_providers_reach_the_app_as_the_code_reads_them():
    from pipeline.settings import _read

    overrides = {
        "analyzers": "faces,objects,tags,text,moderation,caption",
        "analyzerProviders": " Text=docintel, faces=face,,caption=openai,TAGS=OpenAI ",
        "azureVisionCapabilities": "objects,tags",  # tags: analyzerProviders wins
    }
    settings = app_settings(**overrides)
    expected = {
        "faces": "face",
        "objects": "azure",
        "tags": "openai",
        "text": "docintel",
        "moderation": "local",
        "caption": "openai",
    }
    assert {
        k: v for k, v in settings.items() if k.startswith("DARKROOM_") and k.endswith("_PROVIDER")
    } == {f"DARKROOM_{c.upper()}_PROVIDER": p for c, p in expected.items()}
    assert set(_ai_services(**overrides)) == {"vision", "docIntel", "faceApi", "openAi"}
    code, reader = _read(
        {k: v for k, v in settings.items() if k.startswith("DARKROOM_") and isinstance(v, str)}
    )
    assert not reader.problems
    assert {c: code.analysis.provider(c) for c in code.analysis.capabilities} == expected
    # a capability the route does not analyze gets no setting, but its provider is deployed
    only_caption = app_settings(analyzerProviders="caption=openai")
    assert "DARKROOM_CAPTION_PROVIDER" not in only_caption
    assert "DARKROOM_OPENAI_ENDPOINT" in only_caption


def test_parameters_file_maps_the_ai_service_switches_with_the_bicep_defaults():
    """azd: each switch has an environment value, and the defaults written in
    main.parameters.json are main.bicep's own."""
    params = json.loads((BICEP / "main.parameters.json").read_text())["parameters"]
    for name in (
        "analyzerProviders",
        "enableOpenAi",
        "openAiLocation",
        "openAiModelName",
        "openAiModelVersion",
        "openAiSkuName",
        "openAiCapacity",
        "enableOpenAiEmbeddings",
        "enableDocIntel",
        "docIntelLocation",
        "enableFace",
        "faceLocation",
    ):
        match = re.fullmatch(r"\$\{DARKROOM_[A-Z_]+=(.*)\}", params[name]["value"])
        assert match, name
        default = _main_default(name)
        as_text = str(default).lower() if isinstance(default, bool) else str(default)
        assert match.group(1) == as_text, name


# ------------------------------------------------------------------------------ HTTP API
APP_ORIGIN = "https://func-darkroom-<to_lower(…)>.azurewebsites.net"  # name from uniqueString


def _blob_cors_rules(**overrides: Any) -> list[dict]:
    storage = module_scope(main_scope(**overrides), "storage")
    service = resource_config(storage, "blobService")
    return evaluate(service["properties"]["cors"]["corsRules"], storage)


def _site_cors(**overrides: Any) -> dict:
    app = module_scope(main_scope(**overrides), "functionApp")
    return evaluate(resource_config(app, "app")["properties"]["siteConfig"]["cors"], app)


def test_cors_origins_default_to_the_app():
    """No corsOrigins: the app's own default host, on the blob service, the site and the app."""
    assert parsed(MAIN)["parameters"]["corsOrigins"]["default"] == []
    (rule,) = _blob_cors_rules()
    assert rule["allowedOrigins"] == [APP_ORIGIN]
    assert _site_cors() == {"allowedOrigins": [APP_ORIGIN], "supportCredentials": False}
    assert app_settings()["DARKROOM_CORS_ORIGINS"] == APP_ORIGIN


def test_cors_origins_given_are_used_everywhere():
    origins = ALL_FEATURES["corsOrigins"]
    (rule,) = _blob_cors_rules(corsOrigins=origins)
    assert rule["allowedOrigins"] == origins
    assert _site_cors(corsOrigins=origins) == {
        "allowedOrigins": origins,
        "supportCredentials": False,
    }
    settings = app_settings(corsOrigins=origins)
    assert settings["DARKROOM_CORS_ORIGINS"] == ",".join(origins)
    # the value passes the code's own check of DARKROOM_CORS_ORIGINS
    assert Settings.from_env({"DARKROOM_CORS_ORIGINS": settings["DARKROOM_CORS_ORIGINS"]})


def test_blob_cors_rule_allows_sas_uploads_and_reads():
    (rule,) = _blob_cors_rules()
    assert sorted(rule["allowedMethods"]) == ["GET", "HEAD", "OPTIONS", "PUT"]
    assert sorted(rule["allowedHeaders"]) == ["content-length", "content-type", "x-ms-*"]
    assert sorted(rule["exposedHeaders"]) == ["etag", "x-ms-*"]
    assert 0 < rule["maxAgeInSeconds"] <= 86400
    # Storage allows at most two prefixed headers per list and 64 origins per rule
    for headers in (rule["allowedHeaders"], rule["exposedHeaders"]):
        assert sum(h.endswith("*") for h in headers) <= 2
    max_length = {"type": "max_length", "argument": 64}
    assert max_length in parsed(MAIN)["parameters"]["corsOrigins"]["decorators"]


def test_no_cors_rule_without_origins():
    storage = Scope(BICEP / "modules" / "storage.bicep", {"corsOrigins": []})
    assert evaluate("blobCorsRules", storage) == []


def test_limits_table_is_declared_with_the_code_default():
    catalog = _catalog()
    default = catalog["DARKROOM_LIMITS_TABLE"].default
    assert parsed(MAIN)["parameters"]["limitsTable"]["default"] == default == "darkroomlimits"
    assert Settings.from_env({}).api.limits_table == default
    storage = module_scope(main_scope(), "storage")
    assert storage.params["tableNames"] == [default]
    tables = storage.model["resources"]["tables"]
    assert tables["type"] == "Microsoft.Storage/storageAccounts/tableServices/tables"
    assert tables["config"]["loop_type"]["detail"]["array_name"] == "tableNames"
    assert resource_config(storage, "tables")["parent"] == "tableService"
    assert app_settings()["DARKROOM_LIMITS_TABLE"] == default
    renamed = module_scope(main_scope(limitsTable="callerlimits"), "storage")
    assert renamed.params["tableNames"] == ["callerlimits"]
    assert app_settings(limitsTable="callerlimits")["DARKROOM_LIMITS_TABLE"] == "callerlimits"


def test_table_service_connection_is_identity_based():
    settings = app_settings()
    uri = settings["DARKROOM_STORAGE__tableServiceUri"]
    assert uri == Opaque("storage.properties.primaryEndpoints.table")
    assert settings["DARKROOM_STORAGE__credential"] == "managedidentity"
    assert "DARKROOM_STORAGE__tableServiceUri" in parsed(MAIN)["outputs"]


def test_function_host_homepage_is_disabled():
    assert app_settings()["AzureWebJobsDisableHomepage"] == "true"


def test_entra_settings_only_when_given():
    plain = app_settings()
    assert "DARKROOM_ENTRA_TENANT_ID" not in plain and "DARKROOM_ENTRA_AUDIENCE" not in plain
    for param in ("entraTenantId", "entraAudience"):
        assert parsed(MAIN)["parameters"][param]["default"] == ""
    full = app_settings(**ALL_FEATURES)
    assert full["DARKROOM_ENTRA_TENANT_ID"] == ALL_FEATURES["entraTenantId"]
    assert full["DARKROOM_ENTRA_AUDIENCE"] == ALL_FEATURES["entraAudience"]
    code = Settings.from_env(
        {k: full[k] for k in ("DARKROOM_ENTRA_TENANT_ID", "DARKROOM_ENTRA_AUDIENCE")}
    )
    assert code.api.entra_enabled


def test_no_platform_authentication_layer():
    """Decision (main.bicep, docs/deploy.md): the app validates Entra ID tokens itself and API
    keys share the routes, so no authsettingsV2 is declared. Revisit that text before adding one."""
    for path, symbol, res in _all_resources():
        if res["type"] == "Microsoft.Web/sites/config":
            name = evaluate(parsed(path)["resources"][symbol]["config"]["name"], Scope(path))
            assert name.lower() not in ("authsettings", "authsettingsv2"), path.name


def test_role_definition_ids_are_the_built_in_ones():
    """roles.bicep's ids equal the ones checked against Azure's built-in roles list."""
    roles = parsed(BICEP / "modules" / "roles.bicep")["variables"]
    expected = {
        "storageBlobDataOwner": STORAGE_BLOB_DATA_OWNER,
        "storageQueueDataContributor": STORAGE_QUEUE_DATA_CONTRIBUTOR,
        "storageTableDataContributor": STORAGE_TABLE_DATA_CONTRIBUTOR,
        "monitoringMetricsPublisher": MONITORING_METRICS_PUBLISHER,
        "eventGridDataSender": EVENTGRID_DATA_SENDER,
        "cosmosDataContributor": COSMOS_DATA_CONTRIBUTOR,
    }
    assert {name: roles[name]["value"] for name in expected} == expected
    main = parsed(MAIN)["variables"]  # the AI services accounts' roles, given to their module
    assert main["cognitiveServicesUser"]["value"] == COGNITIVE_SERVICES_USER
    assert main["cognitiveServicesOpenAiUser"]["value"] == COGNITIVE_SERVICES_OPENAI_USER
    assert STORAGE_TABLE_DATA_CONTRIBUTOR == "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
    assert STORAGE_BLOB_DELEGATOR == "db58b8e5-c6ad-4a2a-8342-4190687cbf4a"


def test_user_delegation_sas_needs_no_delegator_role():
    """Storage Blob Data Owner includes generateUserDelegationKey/action; the identity holds it
    on the account (uploads and derived/published containers alike) and no Delegator."""
    roles = module_scope(main_scope(**ALL_FEATURES), "roles")
    identity = roles.params["identityPrincipalId"]
    mine = {
        (role, _scope_type(roles, target))
        for role, target, principal in _role_assignments(roles)
        if principal == identity
    }
    assert (STORAGE_BLOB_DATA_OWNER, "Microsoft.Storage/storageAccounts") in mine
    assert (STORAGE_TABLE_DATA_CONTRIBUTOR, "Microsoft.Storage/storageAccounts") in mine
    assert all(role != STORAGE_BLOB_DELEGATOR for role, _ in mine)
    text = (BICEP / "modules" / "roles.bicep").read_text()
    assert "generateUserDelegationKey" in text  # the reason is written down next to the roles


# ------------------------------------------------------------------------------ Event Grid
def test_subscription_targets_the_ingest_webhook():
    main = main_scope()
    path = BICEP / "modules" / "eventgrid-subscription.bicep"
    sub = Scope(
        path,
        {
            "systemTopicName": "evgst",
            "functionAppName": "func",
            "blobsExtensionKey": "KEY",
            "storageAccountName": "st",
            "uploadContainer": evaluate("uploadContainer", main),
            "deadLetterContainer": evaluate("deadLetterContainer", main),
        },
    )
    assert parsed(path)["parameters"]["blobsExtensionKey"]["decorators"][0]["type"] == "secure"
    config = evaluate(resource_config(sub, "subscription")["properties"], sub)
    url = config["destination"]["properties"]["endpointUrl"]
    assert config["destination"]["endpointType"] == "WebHook"
    assert url.startswith("https://<app.properties.defaultHostName>/runtime/webhooks/blobs?")
    assert url.endswith("functionName=Host.Functions.ingest&code=KEY")
    assert config["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert config["filter"]["subjectBeginsWith"] == "/blobServices/default/containers/uploads/"
    assert config["retryPolicy"]["maxDeliveryAttempts"] >= 1
    dead = config["deadLetterWithResourceIdentity"]
    assert dead["identity"] == {"type": "SystemAssigned"}
    assert dead["deadLetterDestination"]["properties"]["blobContainerName"] == (
        "eventgrid-deadletter"
    )
    # main.bicep outputs everything the hook passes to this module
    outputs = parsed(MAIN)["outputs"]
    for name in (
        "AZURE_RESOURCE_GROUP",
        "AZURE_FUNCTION_APP_NAME",
        "AZURE_STORAGE_ACCOUNT_NAME",
        "EVENTGRID_SYSTEM_TOPIC_NAME",
        "EVENTGRID_DEADLETTER_CONTAINER",
        "DARKROOM_UPLOAD_CONTAINER",
        "SERVICE_API_URI",
    ):
        assert name in outputs


def test_ingest_function_name_matches_function_app():
    assert re.search(r'function_name\(\s*"ingest"\s*\)', (ROOT / "function_app.py").read_text())


# ------------------------------------------------------------------------------ azd
def test_parameters_file_names_main_parameters():
    params = json.loads((BICEP / "main.parameters.json").read_text())["parameters"]
    declared = parsed(MAIN)["parameters"]
    assert set(params) <= set(declared)
    assert params["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert params["location"]["value"] == "${AZURE_LOCATION}"
    without_default = {n for n, p in declared.items() if "default" not in p}
    assert without_default <= set(params)


def test_azure_yaml_service_and_hooks():
    text = (ROOT / "azure.yaml").read_text()
    assert re.search(r"^services:\n  api:\n", text, re.M)
    for line in ("project: .", "language: python", "host: function", "path: infra/bicep"):
        assert re.search(rf"^\s+{re.escape(line)}$", text, re.M), line
    for script in re.findall(r"run: \./(scripts/azd/\S+)", text):
        assert (ROOT / script).is_file(), script
    assert "postdeploy.sh" in text and "postdeploy.ps1" in text


def test_postdeploy_hooks_deploy_the_subscription_module():
    for name in ("postdeploy.sh", "postdeploy.ps1"):
        text = (ROOT / "scripts" / "azd" / name).read_text()
        assert "systemKeys.blobs_extension" in text
        assert "infra/bicep/modules/eventgrid-subscription.bicep" in text
        assert "az deployment group create" in text
        assert "event-subscription create" not in text  # the module, so re-runs update


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh")
def test_postdeploy_sh_is_valid_posix_sh():
    script = ROOT / "scripts" / "azd" / "postdeploy.sh"
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0


# ------------------------------------------------------------------------ SLO and drift alerts
ALERTS = BICEP / "modules" / "alerts.bicep"


def _alerts_scope(**overrides: Any) -> Scope | None:
    """modules/alerts.bicep with the parameters main.bicep gives it (None: not deployed)."""
    main = main_scope(**overrides)
    module = parsed(MAIN)["modules"]["alerts"]["config"]
    if not evaluate(module["condition"], main):
        return None
    params = {k: evaluate(v, main) for k, v in module["config"]["params"].items()}
    return Scope(ALERTS, params)


def _alert_rules(scope: Scope) -> list[dict]:
    config = resource_config(scope, "alertRules")
    return [evaluate(config, scope.with_lambda("rule", rule)) for rule in evaluate("rules", scope)]


def test_slo_and_drift_rules_are_log_alerts_on_the_workspace():
    scope = _alerts_scope()
    assert scope is not None  # on by default
    assert scope.params["workspaceId"] == Opaque("monitoring.outputs.logAnalyticsId")
    # alert-<prefix>-<rule>: the prefix holds the deployment's unique token
    rules = {re.sub(r"^alert-darkroom-<[^>]*>-", "", r["name"]): r for r in _alert_rules(scope)}
    assert set(rules) == {"success-rate", "latency-p95", "queue-age", "model-drift"}
    windows = {"PT5M": 5, "PT15M": 15, "PT1H": 60, "P1D": 1440, "P2D": 2880}
    for rule in rules.values():
        assert rule["kind"] == "LogAlert"
        properties = rule["properties"]
        assert properties["scopes"] == [Opaque("monitoring.outputs.logAnalyticsId")]
        assert windows[properties["evaluationFrequency"]] <= windows[properties["windowSize"]]
        (criterion,) = properties["criteria"]["allOf"]
        # each query returns one row per breach: any row fires the rule
        assert criterion["timeAggregation"] == "Count" and criterion["operator"] == "GreaterThan"
        assert criterion["threshold"] == 0 and properties["autoMitigate"] is True
        assert properties["actions"] == {"actionGroups": []}  # no e-mail given
    # a log search alert queries at most two days: the drift window and its baseline fit in it
    assert rules["model-drift"]["properties"]["windowSize"] == "P2D"
    assert [
        d["name"] for d in rules["queue-age"]["properties"]["criteria"]["allOf"][0]["dimensions"]
    ] == ["queue"]
    assert [
        d["name"] for d in rules["model-drift"]["properties"]["criteria"]["allOf"][0]["dimensions"]
    ] == ["capability"]
    assert _alerts_scope(enableAlerts=False) is None


def test_alert_email_makes_an_action_group_every_rule_notifies():
    scope = _alerts_scope(alertEmail="ops@example.com")
    group = resource_config(scope, "actionGroup")
    assert evaluate(parsed(ALERTS)["resources"]["actionGroup"]["config"]["condition"], scope)
    receivers = evaluate(group["properties"]["emailReceivers"], scope)
    assert [r["emailAddress"] for r in receivers] == ["ops@example.com"]
    assert all(
        r["properties"]["actions"] == {"actionGroups": [Opaque("actionGroup.id")]}
        for r in _alert_rules(scope)
    )
    assert not evaluate(
        parsed(ALERTS)["resources"]["actionGroup"]["config"]["condition"], _alerts_scope()
    )


def _queries() -> dict[str, str]:
    return {
        r["name"]: r["properties"]["criteria"]["allOf"][0]["query"]
        for r in _alert_rules(_alerts_scope())
    }


# A `let` that reads a workspace table through a fuzzy union with an empty datatable: it resolves
# (to no rows) while the table does not exist yet. Kusto's union: "If at least one table is
# found, any resolution failure yields a warning ... If none of the resolutions were successful,
# the query returns an error" (learn.microsoft.com/kusto/query/union-operator, isfuzzy).
FUZZY_TABLE = re.compile(
    r"^let (\w+) = union isfuzzy=true \(datatable\(([^)]*)\)\[\]\), (App\w+);$", re.M
)


def _fuzzy_tables(query: str) -> dict[str, tuple[str, set[str]]]:
    """let name -> (workspace table, columns the empty datatable declares)."""
    return {
        name: (table, {c.split(":")[0].strip() for c in columns.split(",")})
        for name, columns, table in FUZZY_TABLE.findall(query)
    }


def test_alert_rules_can_be_created_before_the_workspace_has_the_tables():
    """The first `azd up` creates the workspace and the rules in one deployment: AppMetrics and
    AppDependencies exist only once the app has sent a record, and creating a log search alert
    validates its query ("Failed to resolve table or column expression named 'AppMetrics'").
    So every rule skips that validation (a property of scheduledQueryRules since the API version
    used here: bicep-types-az generated/monitor/microsoft.insights/2023-12-01/types.md,
    `skipQueryValidation`), and every query still runs on a workspace without the tables: it
    reads them only through a fuzzy union with an empty datatable that declares every column
    the query uses."""
    resource = parsed(ALERTS)["resources"]["alertRules"]
    api_version = resource["api_version"]
    assert resource["type"] == "Microsoft.Insights/scheduledQueryRules"
    assert api_version >= "2023-12-01", api_version
    workspace_columns = {"TimeGenerated", "AppRoleName", "Name", "Sum", "ItemCount", "Properties"}
    for rule in _alert_rules(_alerts_scope()):
        name, properties = rule["name"], rule["properties"]
        assert properties["skipQueryValidation"] is True, name
        query = properties["criteria"]["allOf"][0]["query"]
        lets = _fuzzy_tables(query)
        assert {table for table, _ in lets.values()} <= {"AppMetrics", "AppDependencies"}
        body = FUZZY_TABLE.sub("", query)
        # the tables themselves are named only inside those unions
        assert not re.search(r"\b(AppMetrics|AppDependencies)\b", body), name
        used_lets = {n for n in lets if re.search(rf"\b{n}\b", body)}
        assert used_lets, name  # the query reads at least one of them
        declared = set().union(*(lets[n][1] for n in used_lets))
        used = {c for c in workspace_columns if re.search(rf"\b{c}\b", body)}
        assert used <= declared, (name, used - declared)


def test_alert_kusto_reads_the_tables_names_and_dimensions_the_exporter_writes():
    """Scoped to the workspace, so the workspace schema (AppMetrics.Name/Sum/Properties,
    AppDependencies) — never the classic customMetrics/customDimensions of the App Insights
    resource; and only instrument names and attribute keys the code records."""
    from pipeline.observability import metrics

    code = "\n".join(
        (ROOT / "pipeline" / "observability" / name).read_text()
        for name in ("metrics.py", "telemetry.py")
    )
    instruments = {
        v
        for k, v in vars(metrics).items()
        if k.isupper() and isinstance(v, str) and v.startswith("darkroom.")
    }
    for name, query in _queries().items():
        assert "{" not in query and "}" not in query, name  # every placeholder filled
        tables = {table for table, _ in _fuzzy_tables(query).values()}
        assert tables <= {"AppMetrics", "AppDependencies"}, (name, tables)
        for classic in (
            "customMetrics",
            "customDimensions",
            "dependencies",
            "valueSum",
            "timestamp",
        ):
            assert classic not in query, (name, classic)
        assert 'AppRoleName == "darkroom"' in query  # the resource's service.name
        assert set(re.findall(r'(?<!\w)Name == "([^"]+)"', query)) <= instruments, name
        for key in re.findall(r'Properties\["([^"]+)"\]', query):
            assert f'"{key}"' in code, (name, key)  # an attribute the code sets


def test_drift_alert_uses_the_code_defaults_windows_and_psi():
    from pipeline.observability import drift
    from pipeline.observability.settings import DriftSettings

    code = DriftSettings()
    scope = _alerts_scope()
    assert float(scope.param("driftPsiThreshold")) == code.psi_threshold
    assert float(scope.param("driftShareThreshold")) == code.share_threshold
    assert float(scope.param("driftErrorRateThreshold")) == code.error_rate_threshold
    assert scope.param("driftMinImages") == code.min_images
    assert scope.param("driftWindowHours") == code.window_hours
    assert evaluate("driftBaselineHours", scope) == code.baseline_hours
    query = next(q for n, q in _queries().items() if n.endswith("model-drift"))
    assert f"let window = {code.window_hours:g}h;" in query
    assert f"let baseline = {code.baseline_hours:g}h;" in query
    assert f"let epsilon = {drift.EPSILON:.4f};" in query
    assert "log(c / b)" in query and f'"{drift.POSITIVE["moderation"]}"' in query
    for value in (code.psi_threshold, code.share_threshold, code.error_rate_threshold):
        assert f">= {value:g}" in query
    main = parsed(MAIN)["parameters"]
    assert main["driftWindowHours"]["default"] == scope.param("driftWindowHours")


@pytest.mark.parametrize("window", [None, 6, 24])
def test_drift_window_reaches_the_app_as_the_alert_uses_it(window):
    """`driftWindowHours` set the drift alert's windows but not the app's, so `status` (and the
    sweep's drift check) judged 12 h against 36 h while the alert judged e.g. 6 h against 42 h.
    Both app settings come from the same parameter, and the code reads them as the alert does."""
    from pipeline.observability.settings import DriftSettings

    overrides = {} if window is None else {"driftWindowHours": window}
    settings = app_settings(**overrides)
    alerts = _alerts_scope(**overrides)
    expected_window = alerts.param("driftWindowHours")
    assert expected_window == (window or DriftSettings().window_hours)
    assert settings["DARKROOM_DRIFT_WINDOW_HOURS"] == str(expected_window)
    assert settings["DARKROOM_DRIFT_BASELINE_HOURS"] == str(evaluate("driftBaselineHours", alerts))
    drift = Settings.from_env(
        {k: v for k, v in settings.items() if k.startswith("DARKROOM_DRIFT_")}
    ).drift
    assert drift.window_hours == expected_window
    assert drift.window_hours + drift.baseline_hours == 48  # the longest a log alert queries


# ------------------------------------------------------------ role propagation before the deploy
POSTPROVISION = ROOT / "scripts" / "azd" / "postprovision.sh"
# Stands in for the Azure CLI (the cloud endpoint): `az storage blob list` is refused (403, as
# Azure answers while a new data role propagates) until the call numbered $GRANTED_AT.
FAKE_AZ = """#!/bin/sh
n=$(($(cat "$CALLS" 2>/dev/null || echo 0) + 1))
echo "$n $*" >> "$CALLS.log"
echo "$n" > "$CALLS"
if [ "$n" -ge "$GRANTED_AT" ]; then exit 0; fi
echo "ERROR: (AuthorizationPermissionMismatch) This request is not authorized" >&2
exit 1
"""


def _postprovision(tmp_path: Path, granted_at: int, **env: str) -> tuple[int, str, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "az").write_text(FAKE_AZ)
    (bin_dir / "az").chmod(0o755)
    calls = tmp_path / "calls"
    environ = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "CALLS": str(calls),
        "GRANTED_AT": str(granted_at),
        "AZURE_STORAGE_ACCOUNT_NAME": "stdarkroomabc",
        "AZURE_DEPLOYMENT_CONTAINER": "app-package-abc",
        "AZURE_PRINCIPAL_ID": "00000000-0000-0000-0000-00000000abcd",
        "DARKROOM_ROLE_WAIT_INTERVAL": "0",
        "DARKROOM_ROLE_SETTLE_SECONDS": "0",
        **env,
    }
    done = subprocess.run(
        ["sh", str(POSTPROVISION)], env=environ, capture_output=True, text=True, timeout=60
    )
    log = (tmp_path / "calls.log").read_text().splitlines() if calls.exists() else []
    return done.returncode, done.stdout + done.stderr, log


def test_azd_runs_the_role_propagation_wait_before_the_deploy():
    text = (ROOT / "azure.yaml").read_text()
    hooks = text[text.index("\nhooks:") :]
    assert hooks.index("postprovision:") < hooks.index("postdeploy:")
    for script in ("./scripts/azd/postprovision.sh", "./scripts/azd/postprovision.ps1"):
        assert f"run: {script}" in hooks
        assert (ROOT / script).is_file()
    assert subprocess.run(["sh", "-n", str(POSTPROVISION)]).returncode == 0
    # the container it probes is an output azd writes into the hook's environment
    output = parsed(MAIN)["outputs"]["AZURE_DEPLOYMENT_CONTAINER"]["value"]
    assert str(evaluate(output, main_scope())).startswith("app-package-")
    storage = module_scope(main_scope(), "storage")  # the container Flex deploys into
    assert evaluate(output, main_scope()) == storage.params["deploymentContainer"]


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh")
def test_postprovision_waits_until_the_data_role_works(tmp_path):
    code, out, calls = _postprovision(tmp_path, granted_at=3)
    assert code == 0, out
    assert len(calls) == 3  # refused twice, then allowed: the deploy starts only now
    assert all(
        "storage blob list --auth-mode login --account-name stdarkroomabc "
        "--container-name app-package-abc" in call
        for call in calls
    )
    assert out.count("waiting for the new role assignments") == 2
    assert "role assignments in effect" in out


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh")
def test_postprovision_costs_one_probe_when_the_roles_already_work(tmp_path):
    code, out, calls = _postprovision(tmp_path, granted_at=1, DARKROOM_ROLE_SETTLE_SECONDS="30")
    assert code == 0 and len(calls) == 1, out
    assert "more for the app identity" not in out  # no settle wait on a re-provision


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh")
def test_postprovision_gives_up_with_the_advice_and_does_not_fail_the_provision(tmp_path):
    code, out, calls = _postprovision(tmp_path, granted_at=99, DARKROOM_ROLE_WAIT_SECONDS="0")
    assert code == 0 and len(calls) == 1
    assert "AuthorizationPermissionMismatch" in out
    assert "run 'azd deploy' again" in out
    code, out, calls = _postprovision(tmp_path / "x", granted_at=1, AZURE_PRINCIPAL_ID="")
    assert code == 0 and calls == [] and "run 'azd deploy' again" in out


# ------------------------------------------------------------------------------ model steps
MODEL_STEPS = {
    "defects": {"TASK": "detect", "ONNX": "models/defects.onnx", "DECODER": "yolo"},
    "look": {"TASK": "embed", "ONNX": "models/look.onnx", "DIMENSIONS": 512},
    "parts": {
        "TASK": "classify",
        "AZUREML_URL": "https://parts.westeurope.inference.ml.azure.com/score",
    },
}


def test_model_steps_reach_the_app_as_the_settings_it_reads():
    """modelSteps: each step's settings, under DARKROOM_MODEL_<NAME>__, and the app reads
    exactly those names (its catalog) into the model steps it runs."""
    from pipeline.settings import _read

    settings = app_settings(modelSteps=MODEL_STEPS)
    model = {k: v for k, v in settings.items() if k.startswith("DARKROOM_MODEL_")}
    assert model == {
        "DARKROOM_MODEL_DEFECTS__TASK": "detect",
        "DARKROOM_MODEL_DEFECTS__ONNX": "models/defects.onnx",
        "DARKROOM_MODEL_DEFECTS__DECODER": "yolo",
        "DARKROOM_MODEL_LOOK__TASK": "embed",
        "DARKROOM_MODEL_LOOK__ONNX": "models/look.onnx",
        "DARKROOM_MODEL_LOOK__DIMENSIONS": "512",
        "DARKROOM_MODEL_PARTS__TASK": "classify",
        "DARKROOM_MODEL_PARTS__AZUREML_URL": MODEL_STEPS["parts"]["AZUREML_URL"],
    }
    code, reader = _read(model)
    assert not reader.problems
    assert set(model) <= set(reader.catalog)
    assert {n: s.task for n, s in code.model_steps.items()} == {
        "defects": "detect",
        "look": "embed",
        "parts": "classify",
    }
    assert not any(k.startswith("DARKROOM_MODEL_") for k in app_settings())  # none by default


def test_model_step_keys_are_set_only_from_the_secure_parameter():
    main = parsed(MAIN)["parameters"]
    assert main["modelStepSecrets"]["decorators"] and "secure" in json.dumps(
        main["modelStepSecrets"]["decorators"]
    )
    app = module_scope(main_scope(modelStepSecrets={"parts": {"AZUREML_KEY": "k"}}), "functionApp")
    assert app.params["secretSettings"] == {"DARKROOM_MODEL_PARTS__AZUREML_KEY": "k"}
    assert "DARKROOM_MODEL_PARTS__AZUREML_KEY" not in app.params["pipelineSettings"]


def test_an_embedding_step_gets_the_vector_container_the_laptop_makes():
    """The container Bicep makes for an embedding step equals what provisioning makes locally
    (pipeline/stores/embeddings.py ensure_container): partition /owner, cosine on /vector."""
    from types import SimpleNamespace

    from pipeline.stores import embeddings

    azure_side = _vector_containers(modelSteps=MODEL_STEPS)
    assert set(azure_side) == {"faces", "people", "embeddings-look"}
    database = _RecordingDatabase()
    laptop = SimpleNamespace(
        settings=Settings.from_env({}),
        cosmos=SimpleNamespace(get_database_client=lambda name: database),
    )
    embeddings.ensure_container(laptop, "embeddings-look", 512)
    created = database.created["embeddings-look"]
    made = azure_side["embeddings-look"]
    assert dict(created["partition_key"]) == made["partitionKey"]
    assert created["vector_embedding_policy"] == made["vectorEmbeddingPolicy"]
    assert created["indexing_policy"] == made["indexingPolicy"]
    assert made["vectorEmbeddingPolicy"]["vectorEmbeddings"][0]["dimensions"] == 512


def test_azure_ml_workspaces_grant_the_scoring_action_only():
    workspace = (
        "/subscriptions/0000/resourceGroups/ml-rg/providers/"
        "Microsoft.MachineLearningServices/workspaces/vision-ws"
    )
    main = main_scope(azureMlWorkspaceIds=[workspace])
    module = main.model["modules"]["azureMlScoring"]["config"]
    assert module["loop_type"]["detail"]["array_name"] == "azureMlWorkspaceIds"
    scope = module["config"]["scope"]["function"]
    assert scope["type"] == "resource_group"  # deployed in the workspace's own group
    loop = main.with_lambda("workspaceId", workspace)
    parts = scope["parameters"]
    split = workspace.split("/")
    for key, index in (("subscription_id", 2), ("resource_group_name", 4)):
        accessed = parts[key]["operator"]["operands"]
        assert evaluate(accessed["operand_1"], loop)[accessed["operand_2"]] == split[index]
    params = module["config"]["params"]
    assert evaluate(params["workspaceName"], loop) == "vision-ws"
    scoring = BICEP / "modules" / "azureml-scoring.bicep"
    resources = parsed(scoring)["resources"]
    role = evaluate(
        resources["scorer"]["config"]["properties"],
        Scope(scoring, {"workspaceName": "vision-ws", "principalId": "p"}),
    )
    assert role["type"] == "CustomRole"
    assert role["permissions"] == [
        {
            "actions": [
                "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/score/action"
            ],
            "notActions": [],
        }
    ]
    assignment = resources["assignment"]["config"]
    assert assignment["scope"] == "workspace"
    assert evaluate(assignment["properties"]["principalType"], Scope(scoring)) == "ServicePrincipal"
