"""What API Gateway knows about a stage, read from the synthesized templates (``cdk.out``), never from infra's code.

The REST API's resources and methods (across the shared stack and each model stack, joined through their exports),
each method's authorizer, API key requirement and integration (which function, buffered or streamed, its timeout),
the authorizers (cache TTL, identity sources, function), the gateway responses, the usage plans (throttles, per-method
throttles, the names of their keys) and every Lambda function's code asset, handler or entry point and environment.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Template = Mapping[str, Any]


@dataclass(frozen=True)
class FunctionDef:
    """One Lambda function as deployed: where its code is and how its runtime starts it."""

    logical_id: str
    stack: str
    asset: Path  # cdk.out/asset.<hash>: a zip's directory, or an image's build context
    image_target: str | None  # the image's build target; None for a zip
    handler: str | None  # what the runtime calls (zip Handler, image CMD); None for a web-adapter image
    entry_point: tuple[str, ...] | None  # a web-adapter image's server command
    environment: Mapping[str, str]
    timeout_s: int
    memory_mb: int

    @property
    def web_adapter(self) -> bool:
        """Whether the Lambda Web Adapter fronts a web server (the function streams over HTTP)."""
        return self.entry_point is not None

    @property
    def name(self) -> str:
        return f"{self.stack}-{self.logical_id}"


@dataclass(frozen=True)
class Authorizer:
    logical_id: str
    name: str
    ttl_s: int
    identity_sources: tuple[str, ...]
    function: FunctionDef


@dataclass(frozen=True)
class Method:
    path: str  # the resource path, e.g. /v1/chat/completions or /models/m/{proxy+}
    http_method: str
    authorization: str  # CUSTOM, AWS_IAM or NONE
    authorizer: Authorizer | None
    api_key_required: bool
    integration: str  # AWS_PROXY, HTTP_PROXY or MOCK
    function: FunctionDef | None
    stream: bool
    timeout_s: float
    mock_body: str | None = None


@dataclass(frozen=True)
class GatewayResponse:
    status: int
    headers: Mapping[str, str]
    template: str | None


@dataclass(frozen=True)
class UsagePlan:
    name: str
    rate: float
    burst: int
    method_throttles: Mapping[str, tuple[float, int]]  # "<resource path>/<METHOD>" -> (rate, burst)
    key_names: tuple[str, ...]


@dataclass(frozen=True)
class Stage:
    name: str
    region: str
    account: str
    key_source: str  # HEADER or AUTHORIZER
    binary_media_types: tuple[str, ...]
    methods: tuple[Method, ...]
    gateway_responses: Mapping[str, GatewayResponse]
    usage_plans: tuple[UsagePlan, ...]
    tables: Mapping[str, Template] = field(default_factory=dict)  # DynamoDB table name -> its properties


def load_stage(outdir: Path, stage: str) -> Stage:
    """The stage ``maas-<stage>-*`` of a cloud assembly."""
    return _reader(outdir, stage).stage(stage)


def stage_functions(outdir: Path, stage: str) -> list[FunctionDef]:
    """Every maas function of the stage (each model's HTTP, S3 and SQS functions, the API's authorizer)."""
    reader = _reader(outdir, stage)
    found = []
    for stack in reader.templates:
        for logical, props in reader.resources(stack, "AWS::Lambda::Function"):
            config = props.get("ImageConfig") or {}
            handler = props.get("Handler") or (config.get("Command") or [""])[0]
            if str(handler).startswith("functions.") or config.get("EntryPoint"):
                found.append(reader.function(stack, logical))
    return found


def _reader(outdir: Path, stage: str) -> _Reader:
    prefix = f"maas-{stage}-"
    templates = {
        path.name.removesuffix(".template.json"): json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(outdir.glob(f"{prefix}*.template.json"))
    }
    shared_name, api_name = f"{prefix}shared", f"{prefix}api"
    if shared_name not in templates or api_name not in templates:
        raise FileNotFoundError(f"{outdir} holds no {shared_name}/{api_name} templates: synthesize the stage first")
    return _Reader(outdir, templates, shared_name, api_name)


class _Reader:
    def __init__(self, outdir: Path, templates: dict[str, Template], shared: str, api: str) -> None:
        self.outdir, self.templates, self.shared, self.api = outdir, templates, shared, api
        self.exports = {
            output["Export"]["Name"]: next(iter(_refs(output["Value"])), None)
            for output in templates[shared].get("Outputs", {}).values()
            if "Export" in output
        }
        self.tables = {
            f"{stack}:{logical}": resource["Properties"]
            for stack, template in templates.items()
            for logical, resource in template["Resources"].items()
            if resource["Type"] == "AWS::DynamoDB::Table"
        }
        self.functions: dict[str, FunctionDef] = {}
        self.authorizers: dict[str, Authorizer] = {}

    def resources(self, stack: str, kind: str) -> Iterator[tuple[str, Template]]:
        for logical, resource in self.templates[stack]["Resources"].items():
            if resource["Type"] == kind:
                yield logical, resource.get("Properties", {})

    def shared_id(self, stack: str, value: Any) -> str:
        """The logical id (in the shared stack) a value refers to, directly or through an export."""
        if isinstance(value, Mapping) and "Fn::ImportValue" in value:
            found = self.exports.get(value["Fn::ImportValue"])
            if found is None:
                raise ValueError(f"{stack}: no export {value['Fn::ImportValue']!r} in {self.shared}")
            return found
        return next(iter(_refs(value)))

    def table_name(self, stack: str, logical: str) -> str:
        props = self.tables[f"{stack}:{logical}"]
        return str(props.get("TableName") or f"{stack}-{logical}")

    def function(self, stack: str, logical: str) -> FunctionDef:
        key = f"{stack}:{logical}"
        if key in self.functions:
            return self.functions[key]
        props = self.templates[stack]["Resources"][logical]["Properties"]
        code, image = props["Code"], props.get("PackageType") == "Image"
        asset_hash = (code["ImageUri"]["Fn::Sub"].rsplit(":", 1)[1] if image else code["S3Key"]).removesuffix(".zip")
        config = props.get("ImageConfig") or {}
        target = None
        if image:
            assets = json.loads((self.outdir / f"{stack}.assets.json").read_text(encoding="utf-8"))
            target = assets["dockerImages"][asset_hash]["source"].get("dockerBuildTarget")
        environment = {}
        for name, value in (props.get("Environment") or {}).get("Variables", {}).items():
            if isinstance(value, str):
                environment[name] = value
            else:  # a table's Ref: its name
                environment[name] = self.table_name(stack, next(iter(_refs(value))))
        entry = config.get("EntryPoint")
        function = FunctionDef(
            logical_id=logical,
            stack=stack,
            asset=self.outdir / f"asset.{asset_hash}",
            image_target=target,
            handler=props.get("Handler") if not image else (config.get("Command") or [None])[0],
            entry_point=tuple(entry) if entry else None,
            environment=environment,
            timeout_s=int(props.get("Timeout", 3)),
            memory_mb=int(props.get("MemorySize", 128)),
        )
        self.functions[key] = function
        return function

    def integration_function(self, stack: str, integration: Template) -> FunctionDef | None:
        """The function an AWS_PROXY integration invokes (through its alias)."""
        resources = self.templates[stack]["Resources"]
        for ref in _refs(integration.get("Uri")):
            resource = resources.get(ref, {})
            if resource.get("Type") == "AWS::Lambda::Alias":
                return self.function(stack, next(iter(_refs(resource["Properties"]["FunctionName"]))))
            if resource.get("Type") == "AWS::Lambda::Function":
                return self.function(stack, ref)
        return None

    def authorizer(self, logical: str) -> Authorizer:
        if logical not in self.authorizers:
            props = self.templates[self.shared]["Resources"][logical]["Properties"]
            resources = self.templates[self.shared]["Resources"]
            fn = next(r for r in _refs(props["AuthorizerUri"]) if resources[r]["Type"] == "AWS::Lambda::Function")
            sources = [s.strip() for s in str(props.get("IdentitySource") or "").split(",") if s.strip()]
            self.authorizers[logical] = Authorizer(
                logical_id=logical,
                name=props["Name"],
                ttl_s=int(props.get("AuthorizerResultTtlInSeconds", 300)),
                identity_sources=tuple(sources),
                function=self.function(self.shared, fn),
            )
        return self.authorizers[logical]

    def paths(self) -> dict[str, dict[str, str]]:
        """Resource path of every API resource, by stack and logical id."""
        found: dict[str, dict[str, str]] = {}

        def path_of(stack: str, logical: str) -> str:
            if logical in found.setdefault(stack, {}):
                return found[stack][logical]
            props = self.templates[stack]["Resources"][logical]["Properties"]
            parent = props["ParentId"]
            if isinstance(parent, Mapping) and "Fn::GetAtt" in parent:  # the API's root
                prefix = ""
            elif isinstance(parent, Mapping) and "Fn::ImportValue" in parent:
                prefix = path_of(self.shared, self.shared_id(stack, parent))
            else:
                prefix = path_of(stack, next(iter(_refs(parent))))
            found[stack][logical] = f"{prefix}/{props['PathPart']}"
            return found[stack][logical]

        for stack in self.templates:
            for logical, _ in self.resources(stack, "AWS::ApiGateway::Resource"):
                path_of(stack, logical)
        return found

    def methods(self) -> tuple[Method, ...]:
        paths = self.paths()
        methods = []
        for stack in self.templates:
            for _, props in self.resources(stack, "AWS::ApiGateway::Method"):
                resource = props["ResourceId"]
                path = paths[stack][next(iter(_refs(resource)))] if not _is_root(resource) else "/"
                integration = props.get("Integration") or {}
                authorizer = (
                    self.authorizer(self.shared_id(stack, props["AuthorizerId"])) if props.get("AuthorizerId") else None
                )
                mock = None
                if integration.get("Type") == "MOCK":
                    responses = integration.get("IntegrationResponses") or [{}]
                    mock = (responses[0].get("ResponseTemplates") or {}).get("application/json")
                methods.append(
                    Method(
                        path=path,
                        http_method=props["HttpMethod"],
                        authorization=props.get("AuthorizationType", "NONE"),
                        authorizer=authorizer,
                        api_key_required=bool(props.get("ApiKeyRequired")),
                        integration=integration.get("Type", "MOCK"),
                        function=self.integration_function(stack, integration)
                        if integration.get("Type") == "AWS_PROXY"
                        else None,
                        stream=integration.get("ResponseTransferMode") == "STREAM",
                        timeout_s=int(integration.get("TimeoutInMillis", 29_000)) / 1000,
                        mock_body=mock,
                    )
                )
        return tuple(methods)

    def usage_plans(self) -> tuple[UsagePlan, ...]:
        keys = {logical: props["Name"] for logical, props in self.resources(self.api, "AWS::ApiGateway::ApiKey")}
        members: dict[str, list[str]] = {}
        for _, props in self.resources(self.api, "AWS::ApiGateway::UsagePlanKey"):
            plan = next(iter(_refs(props["UsagePlanId"])))
            members.setdefault(plan, []).append(keys[next(iter(_refs(props["KeyId"])))])
        plans = []
        for logical, props in self.resources(self.api, "AWS::ApiGateway::UsagePlan"):
            throttle = props.get("Throttle") or {}
            per_method = {}
            for stage in props.get("ApiStages") or []:
                for key, limit in (stage.get("Throttle") or {}).items():
                    per_method[key] = (float(limit["RateLimit"]), int(limit["BurstLimit"]))
            plans.append(
                UsagePlan(
                    name=props.get("UsagePlanName", logical),
                    rate=float(throttle.get("RateLimit", 10_000)),
                    burst=int(throttle.get("BurstLimit", 5_000)),
                    method_throttles=per_method,
                    key_names=tuple(members.get(logical, [])),
                )
            )
        return tuple(plans)

    def gateway_responses(self) -> dict[str, GatewayResponse]:
        responses = {}
        for _, props in self.resources(self.shared, "AWS::ApiGateway::GatewayResponse"):
            headers = {
                name.removeprefix("gatewayresponse.header."): value.strip("'")
                for name, value in (props.get("ResponseParameters") or {}).items()
            }
            template = (props.get("ResponseTemplates") or {}).get("application/json")
            responses[props["ResponseType"]] = GatewayResponse(int(props["StatusCode"]), headers, template)
        return responses

    def stage(self, stage: str) -> Stage:
        (api,) = (props for _, props in self.resources(self.shared, "AWS::ApiGateway::RestApi"))
        (stage_props,) = (props for _, props in self.resources(self.api, "AWS::ApiGateway::Stage"))
        manifest = json.loads((self.outdir / "manifest.json").read_text(encoding="utf-8"))
        environment = manifest["artifacts"][self.shared]["environment"]  # aws://<account>/<region>
        account, region = environment.removeprefix("aws://").split("/", 1)
        return Stage(
            name=stage_props.get("StageName", stage),
            region=region,
            account=account,
            key_source=api.get("ApiKeySourceType", "HEADER"),
            binary_media_types=tuple(api.get("BinaryMediaTypes") or ()),
            methods=self.methods(),
            gateway_responses=self.gateway_responses(),
            usage_plans=self.usage_plans(),
            tables={self.table_name(*key.split(":", 1)): props for key, props in self.tables.items()},
        )


def _is_root(value: Any) -> bool:
    return isinstance(value, Mapping) and "Fn::GetAtt" in value


def _refs(value: Any) -> Iterator[str]:
    """Every logical id a template value refers to (``Ref`` and ``Fn::GetAtt``), depth first."""
    if isinstance(value, Mapping):
        if "Ref" in value and isinstance(value["Ref"], str) and not value["Ref"].startswith("AWS::"):
            yield value["Ref"]
        if "Fn::GetAtt" in value:
            yield value["Fn::GetAtt"][0]
        for item in value.values():
            if isinstance(item, list | Mapping):
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)
