"""The API stage stack: deployment, stage (access logs, X-Ray, throttling), WAF, usage plans and keys, custom domain.

It deploys after every model stack: a REST API deployment is a snapshot of the methods that exist
when it is created, so it must come after the methods the model stacks add. Its logical id carries
a fingerprint of every route, so adding, removing or changing a model's routes redeploys the stage.

Each tier is a usage plan (throttle and quota per tenant key); in it, every method of a text-generation model has
its own, lower throttle (``generation_rate_limit``/``generation_burst_limit``): such a request holds a function
for seconds. With ``domain_name`` and ``certificate_arn`` the stage is also served on a regional custom domain
(TLS 1.2 at least), mapped at ``base_path``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from functions.contract.deployment import tenant_key_name
from infra.config import ModelSpec
from infra.constructs.api_routes import generation_methods, routes_fingerprint
from infra.constructs.common import data_removal_policy, log_retention
from infra.settings import EnvironmentConfig
from infra.stacks.shared import SharedStack

# What API Gateway writes per request: who (key, principal), what, how long, and why it failed.
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "ip": "$context.identity.sourceIp",
    "caller": "$context.identity.caller",
    "userArn": "$context.identity.userArn",
    "apiKeyId": "$context.identity.apiKeyId",
    "tenant": "$context.authorizer.tenant",  # bearer keys: the tenant and key id the authorizer found
    "keyId": "$context.authorizer.keyId",
    "requestTime": "$context.requestTime",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "status": "$context.status",
    "protocol": "$context.protocol",
    "responseLength": "$context.responseLength",
    "latency": "$context.responseLatency",
    "integrationLatency": "$context.integration.latency",
    "integrationStatus": "$context.integration.status",
    "errorMessage": "$context.error.message",
    "wafStatus": "$context.waf.status",
    "xrayTraceId": "$context.xrayTraceId",
}
# Inference bodies are arbitrary text (HTML, code, long documents): body-size and XSS body rules of the
# common rule set would reject legitimate requests. Body size is bounded by the request schemas instead.
_COUNT_ONLY_RULES = ("SizeRestrictions_BODY", "CrossSiteScripting_BODY")


class ApiStack(cdk.Stack):
    """Deploys the shared REST API to a stage and puts tenants on usage plans."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: EnvironmentConfig,
        shared: SharedStack,
        models: Sequence[ModelSpec],
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        api = apigw.RestApi.from_rest_api_attributes(
            self, "Api", rest_api_id=shared.api.rest_api_id, root_resource_id=shared.api.rest_api_root_resource_id
        )
        deployment = apigw.Deployment(self, "Deployment", api=api, description=f"{settings.prefix} routes")
        deployment.add_to_logical_id(routes_fingerprint(list(models), api_auth=settings.api_auth))
        access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=log_retention(settings),
            removal_policy=data_removal_policy(settings),
        )
        self.stage = apigw.Stage(
            self,
            "Stage",
            deployment=deployment,
            stage_name=settings.stage,
            access_log_destination=apigw.LogGroupLogDestination(access_logs),
            access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FORMAT)),
            tracing_enabled=True,
            metrics_enabled=True,  # per-method metrics feed the GPU models' alarms
            logging_level=apigw.MethodLoggingLevel.ERROR,
            data_trace_enabled=False,  # never log request or response bodies
            throttling_rate_limit=settings.stage_rate_limit,
            throttling_burst_limit=settings.stage_burst_limit,
        )
        self.usage_plans: dict[str, apigw.UsagePlan] = {}
        generation = [method for spec in models for method in generation_methods(spec)]
        for tier in settings.tiers.values():
            plan = self.usage_plans[tier.name] = apigw.UsagePlan(
                self,
                f"Tier-{tier.name}",
                name=f"{settings.prefix}-{tier.name}",
                description=f"maas {tier.name} tier",
                throttle=apigw.ThrottleSettings(rate_limit=tier.rate_limit, burst_limit=tier.burst_limit),
                quota=apigw.QuotaSettings(limit=tier.quota_limit, period=apigw.Period[tier.quota_period]),
                api_stages=[apigw.UsagePlanPerApiStage(api=api, stage=self.stage)],
            )
            if generation:
                # Per-method throttles, keyed "<resource path>/<METHOD>" (the methods live in the model stacks, so
                # they are named here rather than passed across stacks as objects).
                throttles = {
                    f"{path}/{method}": {
                        "RateLimit": tier.generation_rate_limit,
                        "BurstLimit": tier.generation_burst_limit,
                    }
                    for path, method in generation
                }
                cfn_plan = plan.node.default_child
                assert isinstance(cfn_plan, apigw.CfnUsagePlan)
                cfn_plan.add_property_override("ApiStages.0.Throttle", throttles)
        for tenant, tier_name in settings.tenants.items():
            key = apigw.ApiKey(
                self,
                f"Key-{tenant}",
                api_key_name=tenant_key_name(settings.stage, tenant),
                description=f"maas tenant {tenant} ({tier_name} tier)",
                enabled=True,
            )
            self.usage_plans[tier_name].add_api_key(key)
        if settings.waf:
            self._web_acl(settings)
        if settings.domain_name and settings.certificate_arn:
            self._custom_domain(settings, api)

    def _custom_domain(self, settings: EnvironmentConfig, api: apigw.IRestApi) -> None:
        """A regional custom domain (TLS 1.2+) serving this stage at ``base_path``; DNS points at its target."""
        assert settings.domain_name and settings.certificate_arn
        domain = apigw.DomainName(
            self,
            "Domain",
            domain_name=settings.domain_name,
            certificate=acm.Certificate.from_certificate_arn(self, "Certificate", settings.certificate_arn),
            endpoint_type=apigw.EndpointType.REGIONAL,
            security_policy=apigw.SecurityPolicy[settings.domain_security_policy],
        )
        apigw.BasePathMapping(
            self,
            "BasePath",
            domain_name=domain,
            rest_api=api,
            stage=self.stage,
            base_path=settings.base_path or None,
        )
        cdk.CfnOutput(
            self,
            "DomainTarget",
            description=f"Point {settings.domain_name} here (a CNAME, or a Route 53 alias record)",
            value=domain.domain_name_alias_domain_name,
        )
        cdk.CfnOutput(
            self,
            "DomainUrl",
            description="Base URL of the API on the custom domain",
            value=f"https://{settings.domain_name}/{settings.base_path + '/' if settings.base_path else ''}",
        )

    def _web_acl(self, settings: EnvironmentConfig) -> None:
        def managed(name: str, priority: int, count_only: tuple[str, ...] = ()) -> wafv2.CfnWebACL.RuleProperty:
            return wafv2.CfnWebACL.RuleProperty(
                name=name,
                priority=priority,
                override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS",
                        name=name,
                        rule_action_overrides=[
                            wafv2.CfnWebACL.RuleActionOverrideProperty(
                                name=rule, action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={})
                            )
                            for rule in count_only
                        ]
                        or None,
                    )
                ),
                visibility_config=_visibility(name),
            )

        acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=_visibility(f"{settings.prefix}-api"),
            rules=[
                wafv2.CfnWebACL.RuleProperty(
                    name="RateLimitPerIp",
                    priority=0,
                    action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                    statement=wafv2.CfnWebACL.StatementProperty(
                        rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                            aggregate_key_type="IP", limit=settings.waf_ip_rate_limit
                        )
                    ),
                    visibility_config=_visibility("RateLimitPerIp"),
                ),
                managed("AWSManagedRulesAmazonIpReputationList", 1),
                managed("AWSManagedRulesKnownBadInputsRuleSet", 2),
                managed("AWSManagedRulesCommonRuleSet", 3, _COUNT_ONLY_RULES),
            ],
        )
        wafv2.CfnWebACLAssociation(
            self, "WebAclAssociation", resource_arn=self.stage.stage_arn, web_acl_arn=acl.attr_arn
        )


def _visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
    )
