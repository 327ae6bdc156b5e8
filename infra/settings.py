"""Environment settings: stage, account, region, API tiers and tenants, paths.

Precedence, lowest first: defaults here < the stage config file (``-c configFile=infra/stages/<stage>.toml``,
snake_case keys) < CDK context (``cdk.json`` or ``-c camelCaseKey=value``). Account and region fall back
to ``CDK_DEFAULT_ACCOUNT`` / ``CDK_DEFAULT_REGION``, which the CDK CLI sets from the AWS profile.
Nothing here is hard-coded per environment and nothing reaches the network.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from functions.contract.batch_plan import DEFAULT_MAP_CONCURRENCY
from infra.errors import EnvironmentConfigError
from infra.stage_values import choice, cidr, flag, integer, mapping, resolve, strings, subscription

REPO_ROOT = Path(__file__).resolve().parent.parent
STAGE_RE = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
ACCOUNT_RE = re.compile(r"^\d{12}$")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
# CloudWatch Logs accepts only these retention periods.
MAP_CONCURRENCY_MAX = 10_000  # a Distributed Map runs at most this many child executions at once
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)


@dataclass(frozen=True)
class UsageTier:
    """One tenant tier: an API Gateway usage plan with throttling and a quota per API key.

    Generation routes (every method of a text-generation model) get their own, lower per-method throttle in the
    plan: one request there holds a function for seconds, where an embedding takes milliseconds.
    """

    name: str
    rate_limit: float
    burst_limit: int
    quota_limit: int
    quota_period: Literal["DAY", "WEEK", "MONTH"]
    generation_rate_limit: float = 1
    generation_burst_limit: int = 2


DEFAULT_TIERS: dict[str, dict[str, Any]] = {
    "free": {
        "rate_limit": 5, "burst_limit": 10, "quota_limit": 10_000, "quota_period": "DAY",
        "generation_rate_limit": 1, "generation_burst_limit": 2,
    },
    "standard": {
        "rate_limit": 50, "burst_limit": 100, "quota_limit": 1_000_000, "quota_period": "MONTH",
        "generation_rate_limit": 5, "generation_burst_limit": 10,
    },
    "premium": {
        "rate_limit": 200, "burst_limit": 400, "quota_limit": 10_000_000, "quota_period": "MONTH",
        "generation_rate_limit": 20, "generation_burst_limit": 40,
    },
}  # fmt: skip
# How callers authenticate: bearer keys checked by the Lambda authorizer (usage plans fed by it), or SigV4 (IAM
# principals of the account) with API Gateway's own x-api-key for the usage plans.
API_AUTH_MODES = ("bearer", "iam")
AUTHORIZER_CACHE_TTL_MAX_S = 3600  # API Gateway's maximum
# Security policies of a custom domain (TLS 1.2 at least; the TLS 1.3 regional policies of 2025).
DOMAIN_SECURITY_POLICIES = ("TLS_1_2", "TLS13_1_3_2025_09", "TLS13_1_2_PQ_2025_09", "TLS13_1_2_PFS_PQ_2025_09")
DOMAIN_RE = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
CERTIFICATE_RE = re.compile(r"^arn:aws[a-z-]*:acm:([a-z0-9-]+):(\d{12}):certificate/[0-9a-f-]{36}$")
BASE_PATH_RE = re.compile(r"^[A-Za-z0-9._~-]{1,64}(/[A-Za-z0-9._~-]{1,64})?$")


@dataclass(frozen=True)
class EnvironmentConfig:
    """Where and how this copy of maas is deployed; one instance per ``cdk synth`` / ``cdk deploy``."""

    stage: str
    account: str
    region: str
    catalog: Path
    artifacts_dir: Path
    lambda_deps_dir: Path
    staging_dir: Path
    # where `maas bench` records each model's rates (<model>.json): the batch routing and chunk sizes come from them
    benchmarks_dir: Path = REPO_ROOT / "docs" / "benchmarks"
    packaging: Literal["strict", "preview"] = "strict"
    allow_missing_artifacts: bool = False
    availability_zones: tuple[str, ...] = ()
    nat_gateways: int = 1
    log_retention_days: int = 30
    log_level: str = "INFO"
    alarm_email: str | None = None
    # Who hears the alarms: "mailto:<address>", "https://<endpoint>", an SQS queue or Lambda function ARN.
    alarm_subscriptions: tuple[str, ...] = ()
    # A stage that may not deploy with nobody listening to its alarms (prod).
    require_alarm_subscription: bool = False
    # The catalog models this stage deploys (empty = every entry). A GPU model is opt-in this way.
    models: tuple[str, ...] = ()
    # Reserved concurrency of each model's S3 and SQS functions (0 = unreserved): an upload burst cannot take
    # the account's concurrency from the HTTP functions. A catalog entry's batch_reserved_concurrency wins.
    batch_reserved_concurrency: int = 5
    # MaxConcurrency of each model's chunked-job Distributed Map: the chunk functions running at once per job.
    batch_map_concurrency: int = DEFAULT_MAP_CONCURRENCY
    waf: bool = True
    retain_data: bool = True
    api_timeout_quota_s: int = 29
    stage_rate_limit: float = 500
    stage_burst_limit: int = 1000
    batch_retention_days: int = 30
    vpc_cidr: str = "10.64.0.0/16"
    waf_ip_rate_limit: int = 3000
    tiers: Mapping[str, UsageTier] = field(default_factory=dict)
    tenants: Mapping[str, str] = field(default_factory=dict)
    # Authentication: "bearer" (Lambda authorizer, `maas keys`) or "iam" (SigV4 + x-api-key).
    api_auth: Literal["bearer", "iam"] = "bearer"
    # Seconds API Gateway caches an authorizer answer per key (0 = ask on every request; then `x-api-key` alone
    # is accepted too, since a cached authorizer requires its identity source, the Authorization header).
    authorizer_cache_ttl_s: int = 300
    # A custom domain for the API (regional, TLS 1.2+), with the stage mapped at base_path ("" = the root).
    domain_name: str | None = None
    certificate_arn: str | None = None
    base_path: str = ""
    domain_security_policy: str = "TLS_1_2"

    @property
    def prefix(self) -> str:
        """Name prefix of every stack and named resource: ``maas-<stage>``."""
        return f"maas-{self.stage}"

    def bucket_name(self, role: str) -> str:
        """A deterministic, globally unique bucket name: ``maas-<stage>-<role>-<account>-<region>``.

        Fixed names let model stacks write least-privilege ARNs as plain strings (no cross-stack
        tokens), so each IAM statement is reviewable, and acknowledgeable, as written.
        """
        return f"{self.prefix}-{role}-{self.account}-{self.region}"

    @property
    def api_name(self) -> str:
        """The REST API's name, also the ``ApiName`` dimension of its CloudWatch metrics."""
        return f"{self.prefix}-api"


_PATH_KEYS = ("catalog", "artifacts_dir", "lambda_deps_dir", "staging_dir", "benchmarks_dir")


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.capitalize() for part in rest)


def load_environment(
    get_context: Callable[[str], Any], environ: Mapping[str, str], *, repo_root: Path = REPO_ROOT
) -> EnvironmentConfig:
    """Resolve the environment settings from CDK context, an optional config file and ``environ``."""
    raw: dict[str, Any] = {
        "stage": "dev",
        "catalog": "catalog.toml",
        "artifacts_dir": "artifacts",
        "lambda_deps_dir": "build/lambda-deps",
        "staging_dir": "build/infra-staging",
        "benchmarks_dir": "docs/benchmarks",
        "tiers": DEFAULT_TIERS,
        "tenants": {},
    }
    config_file = get_context("configFile")
    if config_file:
        path = resolve(repo_root, str(config_file))
        try:
            raw.update(tomllib.loads(path.read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise EnvironmentConfigError(f"config file {path}: {exc}") from exc
    keys = {f for f in EnvironmentConfig.__dataclass_fields__}
    unknown = sorted(set(raw) - keys)
    if unknown:
        raise EnvironmentConfigError(f"unknown setting(s) {', '.join(unknown)} in {config_file}")
    for key in keys:
        value = get_context(_camel(key))
        if value is not None:
            raw[key] = value
    raw.setdefault("account", environ.get("CDK_DEFAULT_ACCOUNT"))
    raw.setdefault("region", environ.get("CDK_DEFAULT_REGION"))
    return _build(raw, repo_root)


def _build(raw: dict[str, Any], repo_root: Path) -> EnvironmentConfig:
    stage = str(raw["stage"])
    if not STAGE_RE.fullmatch(stage):
        raise EnvironmentConfigError(f"stage {stage!r} must match {STAGE_RE.pattern}")
    account, region = raw.get("account"), raw.get("region")
    if not account or not ACCOUNT_RE.fullmatch(str(account)):
        raise EnvironmentConfigError(
            f"no valid AWS account (got {account!r}): pass -c account=123456789012, set account in the "
            f"stage config file, or run the CDK CLI with an AWS profile (it sets CDK_DEFAULT_ACCOUNT)"
        )
    if not region or not REGION_RE.fullmatch(str(region)):
        raise EnvironmentConfigError(
            f"no valid AWS region (got {region!r}): pass -c region=eu-west-1 or set region in the stage config"
        )
    region = str(region)
    tiers = {name: _tier(name, spec) for name, spec in mapping(raw["tiers"], "tiers").items()}
    tenants = {str(k): str(v) for k, v in mapping(raw["tenants"], "tenants").items()}
    for tenant, tier in tenants.items():
        if not TENANT_RE.fullmatch(tenant):
            raise EnvironmentConfigError(f"tenant name {tenant!r} must match {TENANT_RE.pattern}")
        if tier not in tiers:
            raise EnvironmentConfigError(f"tenant {tenant!r} uses unknown tier {tier!r}; tiers: {', '.join(tiers)}")
    azs = raw.get("availability_zones") or (f"{region}a", f"{region}b")
    if isinstance(azs, str):
        azs = [a.strip() for a in azs.split(",") if a.strip()]
    config = EnvironmentConfig(
        stage=stage,
        account=str(account),
        region=region,
        **{key: resolve(repo_root, str(raw[key])) for key in _PATH_KEYS},
        packaging=choice(raw.get("packaging", "strict"), ("strict", "preview"), "packaging"),
        allow_missing_artifacts=flag(raw.get("allow_missing_artifacts", False), "allowMissingArtifacts"),
        availability_zones=tuple(str(a) for a in azs),
        nat_gateways=integer(raw.get("nat_gateways", 1), "natGateways", low=1),
        log_retention_days=integer(raw.get("log_retention_days", 30), "logRetentionDays", low=1),
        log_level=choice(raw.get("log_level", "INFO"), ("DEBUG", "INFO", "WARNING", "ERROR"), "logLevel"),
        alarm_email=str(raw["alarm_email"]) if raw.get("alarm_email") else None,
        alarm_subscriptions=tuple(
            subscription(s) for s in strings(raw.get("alarm_subscriptions", ()), "alarmSubscriptions")
        ),
        require_alarm_subscription=flag(raw.get("require_alarm_subscription", False), "requireAlarmSubscription"),
        models=tuple(strings(raw.get("models", ()), "models")),
        batch_reserved_concurrency=integer(raw.get("batch_reserved_concurrency", 5), "batchReservedConcurrency", low=0),
        batch_map_concurrency=integer(raw.get("batch_map_concurrency", DEFAULT_MAP_CONCURRENCY), "batchMapConcurrency",
                                   low=1),
        waf=flag(raw.get("waf", True), "waf"),
        retain_data=flag(raw.get("retain_data", True), "retainData"),
        api_timeout_quota_s=integer(raw.get("api_timeout_quota_s", 29), "apiTimeoutQuotaS", low=1),
        stage_rate_limit=float(integer(raw.get("stage_rate_limit", 500), "stageRateLimit", low=1)),
        stage_burst_limit=integer(raw.get("stage_burst_limit", 1000), "stageBurstLimit", low=1),
        batch_retention_days=integer(raw.get("batch_retention_days", 30), "batchRetentionDays", low=1),
        vpc_cidr=cidr(raw.get("vpc_cidr", "10.64.0.0/16")),
        waf_ip_rate_limit=integer(raw.get("waf_ip_rate_limit", 3000), "wafIpRateLimit", low=10),
        tiers=tiers,
        tenants=tenants,
        api_auth=choice(raw.get("api_auth", "bearer"), API_AUTH_MODES, "apiAuth"),
        authorizer_cache_ttl_s=integer(raw.get("authorizer_cache_ttl_s", 300), "authorizerCacheTtlS", low=0),
        domain_name=str(raw["domain_name"]).lower() if raw.get("domain_name") else None,
        certificate_arn=str(raw["certificate_arn"]) if raw.get("certificate_arn") else None,
        base_path=str(raw.get("base_path") or "").strip("/"),
        domain_security_policy=choice(
            raw.get("domain_security_policy", "TLS_1_2"), DOMAIN_SECURITY_POLICIES, "domainSecurityPolicy"
        ),
    )
    _check_api_access(config)
    if config.allow_missing_artifacts and config.packaging != "preview":
        raise EnvironmentConfigError(
            "allowMissingArtifacts=true is a preview of the infrastructure (cdk synth / cdk diff): it needs "
            "-c packaging=preview, so a model without its artifact can never be deployed"
        )
    if config.require_alarm_subscription and not (config.alarm_subscriptions or config.alarm_email):
        raise EnvironmentConfigError(
            f"stage {config.stage!r} requires someone to hear its alarms: set alarm_subscriptions (e.g. "
            f'["mailto:oncall@example.com"]) in its config file or -c alarmSubscriptions=\'["mailto:..."]\''
        )
    if config.log_retention_days not in LOG_RETENTION_DAYS:
        raise EnvironmentConfigError(f"logRetentionDays must be one of {LOG_RETENTION_DAYS}")
    if len(config.availability_zones) < 2:
        raise EnvironmentConfigError("availabilityZones needs at least two zones (the load balancer needs two)")
    if config.nat_gateways > len(config.availability_zones):
        raise EnvironmentConfigError("natGateways cannot exceed the number of availability zones")
    if config.batch_map_concurrency > MAP_CONCURRENCY_MAX:
        raise EnvironmentConfigError(
            f"batchMapConcurrency must be at most {MAP_CONCURRENCY_MAX} (Step Functions' Distributed Map limit)"
        )
    top = max((t.rate_limit for t in tiers.values()), default=0)
    if config.stage_rate_limit < top:
        raise EnvironmentConfigError(
            f"stageRateLimit ({config.stage_rate_limit}) is below the fastest tier ({top}): that tier "
            f"could never reach its own limit"
        )
    return config


def _check_api_access(config: EnvironmentConfig) -> None:
    """The authorizer cache and the custom domain: values API Gateway and ACM accept."""
    if config.authorizer_cache_ttl_s > AUTHORIZER_CACHE_TTL_MAX_S:
        raise EnvironmentConfigError(
            f"authorizerCacheTtlS must be 0..{AUTHORIZER_CACHE_TTL_MAX_S} (API Gateway's maximum), got "
            f"{config.authorizer_cache_ttl_s}"
        )
    if bool(config.domain_name) != bool(config.certificate_arn):
        raise EnvironmentConfigError(
            "a custom domain needs both domainName and certificateArn (an ACM certificate for that name, in the "
            "stage's region)"
        )
    if config.base_path and not config.domain_name:
        raise EnvironmentConfigError("basePath maps the API under a custom domain: set domainName and certificateArn")
    if config.domain_name is None or config.certificate_arn is None:
        return
    if not DOMAIN_RE.fullmatch(config.domain_name):
        raise EnvironmentConfigError(f"domainName {config.domain_name!r} is not a DNS name such as api.example.com")
    match = CERTIFICATE_RE.fullmatch(config.certificate_arn)
    if match is None:
        raise EnvironmentConfigError(
            f"certificateArn {config.certificate_arn!r} is not an ACM certificate ARN "
            "(arn:aws:acm:<region>:<account>:certificate/<id>)"
        )
    if match.group(1) != config.region:
        raise EnvironmentConfigError(
            f"certificateArn is in {match.group(1)}, but a regional API's domain needs a certificate in the stage's "
            f"region {config.region}: request or import it there"
        )
    if config.base_path and not BASE_PATH_RE.fullmatch(config.base_path):
        raise EnvironmentConfigError(
            f"basePath {config.base_path!r} must be one or two path segments of letters, digits and ._~- (e.g. 'v1' "
            "or 'ml/prod')"
        )


def _tier(name: str, spec: Any) -> UsageTier:
    if not TENANT_RE.fullmatch(name):
        raise EnvironmentConfigError(f"tier name {name!r} must match {TENANT_RE.pattern}")
    spec = mapping(spec, f"tiers.{name}")
    tier = UsageTier(
        name=name,
        rate_limit=float(integer(spec.get("rate_limit"), f"tiers.{name}.rate_limit", low=1)),
        burst_limit=integer(spec.get("burst_limit"), f"tiers.{name}.burst_limit", low=1),
        quota_limit=integer(spec.get("quota_limit"), f"tiers.{name}.quota_limit", low=1),
        quota_period=choice(spec.get("quota_period"), ("DAY", "WEEK", "MONTH"), f"tiers.{name}.quota_period"),
    )
    # Without their own figures, generation routes get a tenth of the tier's (at least 1 request/s, burst 1).
    derived_rate = max(1, min(int(tier.rate_limit), round(tier.rate_limit / 10)))
    derived_burst = max(derived_rate, min(tier.burst_limit, tier.burst_limit // 10))
    tier = replace(
        tier,
        generation_rate_limit=float(
            integer(spec.get("generation_rate_limit", derived_rate), f"tiers.{name}.generation_rate_limit", low=1)
        ),
        generation_burst_limit=integer(
            spec.get("generation_burst_limit", derived_burst), f"tiers.{name}.generation_burst_limit", low=1
        ),
    )
    if tier.burst_limit < tier.rate_limit:
        raise EnvironmentConfigError(f"tier {name!r}: burst_limit must be at least rate_limit")
    if tier.generation_burst_limit < tier.generation_rate_limit:
        raise EnvironmentConfigError(f"tier {name!r}: generation_burst_limit must be at least generation_rate_limit")
    if tier.generation_rate_limit > tier.rate_limit or tier.generation_burst_limit > tier.burst_limit:
        raise EnvironmentConfigError(
            f"tier {name!r}: generation_rate_limit/generation_burst_limit ({tier.generation_rate_limit:g}/"
            f"{tier.generation_burst_limit}) must not exceed the tier's rate_limit/burst_limit ({tier.rate_limit:g}/"
            f"{tier.burst_limit}): the plan's own throttle would cap them anyway"
        )
    return tier
