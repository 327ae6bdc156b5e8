"""The shared stack: data key, buckets, alarm topic, the REST API definition, network and shared alarms.

Model stacks add their routes to the API defined here; the API's deployment, stage, WAF and usage
plans live in :mod:`infra.stacks.api`, which deploys after every model stack (a REST API stage must
be deployed after the methods it serves, and those belong to the model stacks).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from functions.contract.deployment import IDEMPOTENCY_DIR, IDEMPOTENCY_TTL_DAYS, RUNS_DIR, RUNS_TTL_DAYS
from infra import nag, packaging
from infra.config import ModelSpec
from infra.constructs.alarms import ApiAlarms
from infra.constructs.api_routes import ApiRefs, cog4_reason, method_auth
from infra.constructs.authorizer import ApiAuthorizers
from infra.constructs.common import data_removal_policy, log_retention
from infra.settings import EnvironmentConfig

# Versions replaced (an input uploaded again, a job rerun) or expired stay this long, then go.
NONCURRENT_VERSION_DAYS = 7
# Multipart uploads left behind (a job killed at its timeout before it could abort) are cleaned up.
ABORT_UPLOADS_DAYS = 7


class SharedStack(cdk.Stack):
    """Everything the model stacks share; created once per stage."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: EnvironmentConfig,
        models: Sequence[ModelSpec],
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.settings = settings
        removal = data_removal_policy(settings)
        self.data_key = self._data_key(removal)
        self.logs_bucket = self._logs_bucket(removal)
        abort_uploads = s3.LifecycleRule(
            id="abort-uploads", abort_incomplete_multipart_upload_after=cdk.Duration.days(ABORT_UPLOADS_DAYS)
        )
        self.artifact_bucket = self._data_bucket(
            "ArtifactBucket",
            "artifacts",
            removal,
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-old-versions", noncurrent_version_expiration=cdk.Duration.days(90)),
                abort_uploads,
            ],
        )
        self.batch_bucket = self._data_bucket(
            "BatchBucket", "batch", removal, versioned=True, lifecycle_rules=_batch_lifecycle(settings, models)
        )
        # Every event of the batch bucket goes to EventBridge, where each model stack's own rules pick its uploads
        # (by prefix, and by size: docs/batch.md). Set here, natively, once: no model stack edits the bucket's
        # notification configuration (CDK's notification custom resource read, merged and rewrote it per stack).
        cfn_bucket = self.batch_bucket.node.default_child
        assert isinstance(cfn_bucket, s3.CfnBucket)
        cfn_bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            event_bridge_configuration=s3.CfnBucket.EventBridgeConfigurationProperty(event_bridge_enabled=True)
        )
        self.alarm_topic = sns.Topic(
            self, "AlarmTopic", display_name=f"{settings.prefix} alarms", master_key=self.data_key, enforce_ssl=True
        )
        for target in (
            *settings.alarm_subscriptions,
            *([f"mailto:{settings.alarm_email}"] * bool(settings.alarm_email)),
        ):
            self.alarm_topic.add_subscription(self._subscription(target))

        self.authorizers: ApiAuthorizers | None = None
        self.api = self._rest_api(models)
        self.vpc = self._vpc() if any(m.target == "gpu" for m in models) else None
        ApiAlarms(self, "ApiAlarms", settings=settings, topic=self.alarm_topic, models=models)
        cdk.CfnOutput(self, "ArtifactBucketName", value=self.artifact_bucket.bucket_name)
        cdk.CfnOutput(self, "BatchBucketName", value=self.batch_bucket.bucket_name)
        cdk.CfnOutput(
            self,
            "ApiUrl",
            description="Base URL of the API stage (deployed by the api stack)",
            value=f"https://{self.api.rest_api_id}.execute-api.{self.region}.{self.url_suffix}/{settings.stage}/",
        )

    def _subscription(self, target: str) -> sns.ITopicSubscription:
        """``mailto:`` an address, ``https://`` an endpoint, or an SQS queue / Lambda function by ARN."""
        if target.startswith("mailto:"):
            return subscriptions.EmailSubscription(target.removeprefix("mailto:"))
        if target.startswith("https://"):
            return subscriptions.UrlSubscription(target)
        name = target.rsplit(":", 1)[-1]
        if ":sqs:" in target:
            return subscriptions.SqsSubscription(sqs.Queue.from_queue_arn(self, f"AlarmQueue-{name}", target))
        return subscriptions.LambdaSubscription(
            lambda_.Function.from_function_arn(self, f"AlarmFunction-{name}", target)
        )

    def api_refs(self) -> ApiRefs:
        """The API pieces model stacks attach their routes to."""
        return ApiRefs(
            rest_api_id=self.api.rest_api_id,
            root_resource_id=self.api.rest_api_root_resource_id,
            models_resource_id=self.models_resource.resource_id,
            v2_models_resource_id=self.v2_models_resource.resource_id,
            v1_resource_id=self.v1_resource.resource_id,
            body_validator_id=self.body_validator.request_validator_id,
            params_validator_id=self.params_validator.request_validator_id,
            authorizer_ids=dict(self.authorizers.ids) if self.authorizers is not None else None,
        )

    def _data_key(self, removal: cdk.RemovalPolicy) -> kms.Key:
        key = kms.Key(
            self,
            "DataKey",
            alias=f"alias/{self.settings.prefix}-data",
            description="maas data at rest: artifact and batch buckets, API key table, alarm topic",
            enable_key_rotation=True,
            removal_policy=removal,
            pending_window=cdk.Duration.days(30 if self.settings.retain_data else 7),
        )
        # CloudWatch alarms and Auto Scaling notifications publish to the encrypted alarm topic.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowAlarmPublishers",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowAutoScalingNotifications",
                principals=[
                    iam.ArnPrincipal(
                        f"arn:{self.partition}:iam::{self.account}:role/aws-service-role/"
                        "autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
                    )
                ],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],
            )
        )
        return key

    def _data_bucket(
        self,
        construct_id: str,
        role: str,
        removal: cdk.RemovalPolicy,
        *,
        versioned: bool,
        lifecycle_rules: list[s3.LifecycleRule],
    ) -> s3.Bucket:
        """A private, KMS-encrypted, TLS-only bucket whose access is logged under ``s3/<role>/``."""
        return s3.Bucket(
            self,
            construct_id,
            bucket_name=self.settings.bucket_name(role),
            versioned=versioned,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.data_key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            server_access_logs_bucket=self.logs_bucket,
            server_access_logs_prefix=f"s3/{role}/",
            lifecycle_rules=lifecycle_rules,
            removal_policy=removal,
        )

    def _logs_bucket(self, removal: cdk.RemovalPolicy) -> s3.Bucket:
        bucket = s3.Bucket(
            self,
            "AccessLogsBucket",
            bucket_name=self.settings.bucket_name("logs"),
            # S3 server access logging and NLB access logs can only write to SSE-S3 buckets.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            lifecycle_rules=[s3.LifecycleRule(id="expire-logs", expiration=cdk.Duration.days(365))],
            removal_policy=removal,
        )
        # NLB access logs of the GPU models (the model stacks import this bucket by name and cannot
        # change its policy themselves).
        nlb_logs = bucket.arn_for_objects(f"nlb/*/AWSLogs/{self.account}/*")
        source = {
            "StringEquals": {"aws:SourceAccount": self.account},
            "ArnLike": {"aws:SourceArn": f"arn:{self.partition}:logs:{self.region}:{self.account}:*"},
        }
        delivery = iam.ServicePrincipal("delivery.logs.amazonaws.com")
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="NlbLogDeliveryWrite",
                principals=[delivery],
                actions=["s3:PutObject"],
                resources=[nlb_logs],
                conditions={
                    **source,
                    "StringEquals": {**source["StringEquals"], "s3:x-amz-acl": "bucket-owner-full-control"},
                },
            )
        )
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="NlbLogDeliveryAclCheck",
                principals=[delivery],
                actions=["s3:GetBucketAcl"],
                resources=[bucket.bucket_arn],
                conditions=source,
            )
        )
        nag.acknowledge(
            bucket, "AwsSolutions-S1", "This is the access-log destination; logging it into itself would loop"
        )
        return bucket

    def _rest_api(self, models: Sequence[ModelSpec]) -> apigw.RestApi:
        api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=self.settings.api_name,
            description="maas: one route family per catalog model (task API, OIP v2, OpenAI)",
            deploy=False,  # deployed by the api stack, after the model stacks added their methods
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=cdk.RemovalPolicy.RETAIN,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # bearer: the authorizer names the tenant's usage-plan key; iam: callers send it in x-api-key
            api_key_source_type=(
                apigw.ApiKeySourceType.AUTHORIZER
                if self.settings.api_auth == "bearer"
                else apigw.ApiKeySourceType.HEADER
            ),
            binary_media_types=["image/*", "application/octet-stream"],
        )
        if self.settings.api_auth == "bearer":
            self.authorizers = ApiAuthorizers(
                self,
                "Keys",
                api=api,
                settings=self.settings,
                data_key=self.data_key,
                code_dir=packaging.stage_authorizer_zip(self.settings),
            )
        self.body_validator = api.add_request_validator(
            "BodyValidator", validate_request_body=True, validate_request_parameters=True
        )
        self.params_validator = api.add_request_validator(
            "ParamsValidator", validate_request_body=False, validate_request_parameters=True
        )
        self.models_resource = api.root.add_resource("models")
        self.v2_models_resource = api.root.add_resource("v2").add_resource("models")
        self.v1_resource = api.root.add_resource("v1")
        # GET /v1/models answers OpenAI clients' model listing straight from API Gateway.
        listing = {
            "object": "list",
            "data": [{"id": m.name, "object": "model", "owned_by": "maas", "task": m.task} for m in models],
        }
        self.v1_resource.add_resource("models").add_method(
            "GET",
            apigw.MockIntegration(
                request_templates={"application/json": '{"statusCode": 200}'},
                integration_responses=[
                    apigw.IntegrationResponse(
                        status_code="200", response_templates={"application/json": json.dumps(listing)}
                    )
                ],
            ),
            method_responses=[apigw.MethodResponse(status_code="200")],
            **method_auth(self.authorizers.ids if self.authorizers else None, "/v1/models"),
            api_key_required=True,
            request_validator=self.params_validator,
        )
        nag.acknowledge(api, "AwsSolutions-COG4", cog4_reason(self.settings.api_auth))
        role = api.node.try_find_child("CloudWatchRole")
        if role is not None:
            nag.acknowledge(
                role,
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]",
                "API Gateway's account-wide logging role; this AWS-managed policy is the one AWS documents for it",
            )
        return api

    def _vpc(self) -> ec2.Vpc:
        flow_logs = logs.LogGroup(self, "VpcFlowLogs", retention=log_retention(self.settings))
        vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(self.settings.vpc_cidr),
            availability_zones=list(self.settings.availability_zones),
            nat_gateways=self.settings.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22),
            ],
            flow_logs={"all": ec2.FlowLogOptions(destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))},
            gateway_endpoints={
                "s3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "dynamodb": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
            restrict_default_security_group=True,
        )
        return vpc


def _batch_lifecycle(settings: EnvironmentConfig, models: Sequence[ModelSpec]) -> list[s3.LifecycleRule]:
    """Lifecycle of the batch bucket: inputs and outputs expire, and nothing versioned lingers.

    The bucket is versioned (a job reads exactly the version its event announced), so expired and
    replaced objects become noncurrent versions that expire ``NONCURRENT_VERSION_DAYS`` later, and
    the delete markers left alone then are removed. Each model's ``<output prefix>.idempotency/``
    (where the runtime would keep idempotency records without a table) expires one day after the
    records' TTL, in case a function ever runs without its table.
    """
    retention = cdk.Duration.days(settings.batch_retention_days)
    # inputs/<model>/ is watched by each model's EventBridge rules; outputs/<model>/ is only written.
    rules = [
        s3.LifecycleRule(id="expire-inputs", prefix="inputs/", expiration=retention),
        s3.LifecycleRule(id="expire-outputs", prefix="outputs/", expiration=retention),
        s3.LifecycleRule(
            id="expire-noncurrent-versions",
            noncurrent_version_expiration=cdk.Duration.days(NONCURRENT_VERSION_DAYS),
            expired_object_delete_marker=True,
            abort_incomplete_multipart_upload_after=cdk.Duration.days(ABORT_UPLOADS_DAYS),
        ),
    ]
    idempotency_days = cdk.Duration.days(IDEMPOTENCY_TTL_DAYS + 1)
    rules += [
        s3.LifecycleRule(
            id=f"expire-idempotency-{spec.name}",
            prefix=f"{spec.output_prefix}{IDEMPOTENCY_DIR}",
            expiration=idempotency_days,
        )
        for spec in models
    ]
    # A chunked job's working files (chunk list, chunk outputs, the Map's results) are deleted by its merge; a run
    # that failed keeps them for a redrive, which Step Functions allows for 14 days. Then they go.
    rules += [
        s3.LifecycleRule(
            id=f"expire-runs-{spec.name}",
            prefix=f"{spec.output_prefix}{RUNS_DIR}",
            expiration=cdk.Duration.days(RUNS_TTL_DAYS + 1),
        )
        for spec in models
    ]
    return rules
