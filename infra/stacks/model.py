"""One stack per catalog model: its compute (Lambda or GPU service), batch events, routes and alarms.

The stack composes constructs and wires permissions; it holds no logic of its own beyond choosing
the constructs for the model's ``target``.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from constructs import Construct

from functions.contract.catalog import LambdaDeploy
from infra import packaging
from infra.config import ModelSpec
from infra.constructs.alarms import ModelAlarms, ModelSignals
from infra.constructs.api_routes import ModelRoutes, route_table
from infra.constructs.batch_events import BatchEvents
from infra.constructs.batch_state_machine import BatchStateMachine
from infra.constructs.data_access import DataAccess
from infra.constructs.gpu_service import GpuService
from infra.constructs.lambda_endpoint import LambdaEndpoint
from infra.settings import EnvironmentConfig
from infra.stacks.shared import SharedStack

ONE_MINUTE = cdk.Duration.minutes(1)
# How a new HTTP version reaches the `live` alias (catalog deploy.rollout); rolled back when the alarms fire.
ROLLOUTS = {
    "canary-10-percent-5-minutes": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_5_MINUTES,
    "canary-10-percent-15-minutes": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_15_MINUTES,
    "linear-10-percent-every-minute": codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_1_MINUTE,
}
FIVE_MINUTES = cdk.Duration.minutes(5)


class ModelStack(cdk.Stack):
    """Everything one model needs; depends only on the shared stack."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: ModelSpec,
        settings: EnvironmentConfig,
        shared: SharedStack,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.spec = spec
        self.add_stack_dependency(shared, "buckets are imported by their fixed names")
        self.access = DataAccess(
            artifact_bucket_name=settings.bucket_name("artifacts"),
            batch_bucket_name=settings.bucket_name("batch"),
            data_key=shared.data_key,
            partition=self.partition,
            region=self.region,
            account=settings.account,
        )
        self.sizing = spec.batch_sizing(settings.benchmarks_dir, settings.batch_map_concurrency)
        self.table = dynamodb.Table(
            self,
            "IdempotencyTable",
            partition_key=dynamodb.Attribute(name="id", type=dynamodb.AttributeType.STRING),
            time_to_live_attribute="expiration",
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=cdk.RemovalPolicy.DESTROY,  # idempotency records expire anyway
        )
        if spec.target == "lambda":
            signals = self._lambda_model(spec, settings, shared)
        else:
            signals = self._gpu_model(spec, settings, shared)
        self.alarms = ModelAlarms(
            self, "Alarms", spec=spec, settings=settings, topic=shared.alarm_topic, signals=signals
        )
        if isinstance(spec.deploy, LambdaDeploy) and spec.deploy.rollout != "all-at-once":
            self.rollout = codedeploy.LambdaDeploymentGroup(
                self,
                "Rollout",
                alias=self.endpoint.http_alias,
                deployment_config=ROLLOUTS[spec.deploy.rollout],
                alarms=[self.alarms.alarms["errors"], self.alarms.alarms["server_errors"]],
                auto_rollback=codedeploy.AutoRollbackConfig(failed_deployment=True, deployment_in_alarm=True),
            )

    def _lambda_model(self, spec: ModelSpec, settings: EnvironmentConfig, shared: SharedStack) -> ModelSignals:
        if spec.package == "zip":
            package_dir = packaging.stage_lambda_zip(spec, settings, architecture=spec.deploy.architecture)  # type: ignore[union-attr]
        else:
            package_dir = packaging.stage_docker_context(spec, settings, dockerfile=packaging.LAMBDA_DOCKERFILE)
        endpoint = self.endpoint = LambdaEndpoint(
            self,
            "Endpoint",
            spec=spec,
            settings=settings,
            package_dir=package_dir,
            access=self.access,
            table=self.table,
            chunk_bytes=self.sizing.chunk_bytes,
        )
        self.jobs = BatchStateMachine(
            self,
            "ChunkedJobs",
            spec=spec,
            settings=settings,
            sizing=self.sizing,
            access=self.access,
            chunk_function=endpoint.chunk_alias,
            alarm_topic=shared.alarm_topic,
        )
        events = BatchEvents(
            self,
            "Batch",
            spec=spec,
            batch_bucket_name=settings.bucket_name("batch"),
            sizing=self.sizing,
            s3_function=endpoint.s3_alias,
            sqs_function=endpoint.sqs_alias,
            chunk_function=endpoint.chunk_alias,
            state_machine=self.jobs.state_machine,
        )
        self.events = events
        integration = apigw.LambdaIntegration(
            endpoint.http_alias,
            proxy=True,
            allow_test_invoke=False,
            timeout=cdk.Duration.seconds(spec.deploy.api_timeout_s),
            # a streaming model's function answers through the Lambda Web Adapter: invoked with response streaming
            response_transfer_mode=apigw.ResponseTransferMode.STREAM if spec.streams else None,
        )
        self.routes = ModelRoutes(
            self, "Routes", spec=spec, refs=shared.api_refs(), integration=lambda _method, _path: integration
        )
        functions = endpoint.functions

        def total(metric: str) -> cw.MathExpression:
            usings = {
                f"m{i}": fn.metric(metric, statistic="Sum", period=FIVE_MINUTES) for i, fn in enumerate(functions)
            }
            return cw.MathExpression(expression="+".join(usings), using_metrics=usings, period=FIVE_MINUTES)

        return ModelSignals(
            errors=total("Errors"),
            throttles=total("Throttles"),
            throttles_description="Lambda throttled invocations (concurrency limits reached)",
            latency_p99=endpoint.http_function.metric_duration(statistic="p99", period=FIVE_MINUTES),
            latency_threshold_ms=0.8 * 1000 * spec.deploy.timeout_s,
            dead_letter_queues=events.dead_letter_queues,
            extra_widgets=[
                cw.GraphWidget(
                    title="Concurrent executions",
                    left=[
                        fn.metric("ConcurrentExecutions", statistic="Maximum", period=ONE_MINUTE) for fn in functions
                    ],
                    width=12,
                ),
                cw.GraphWidget(
                    title="Chunked S3 jobs (executions)",
                    left=[
                        self.jobs.state_machine.metric_started(period=FIVE_MINUTES),
                        self.jobs.state_machine.metric_succeeded(period=FIVE_MINUTES),
                        self.jobs.failures,
                    ],
                    width=12,
                ),
            ],
        )

    def _gpu_model(self, spec: ModelSpec, settings: EnvironmentConfig, shared: SharedStack) -> ModelSignals:
        if shared.vpc is None:
            raise ValueError("the shared stack has no VPC although a gpu model exists")
        context_dir = packaging.stage_docker_context(spec, settings, dockerfile=packaging.GPU_DOCKERFILE)
        events = BatchEvents(self, "Batch", spec=spec, batch_bucket_name=settings.bucket_name("batch"))
        self.events = events
        logs_bucket = s3.Bucket.from_bucket_name(self, "AccessLogsBucket", settings.bucket_name("logs"))
        service = GpuService(
            self,
            "Service",
            spec=spec,
            settings=settings,
            context_dir=context_dir,
            vpc=shared.vpc,
            access=self.access,
            table=self.table,
            queue=events.queue,
            logs_bucket=logs_bucket,
            alarm_topic=shared.alarm_topic,
        )
        self.service = service
        self.routes = ModelRoutes(self, "Routes", spec=spec, refs=shared.api_refs(), integration=service.integration)

        def api_metric(name: str, statistic: str, resource: str, method: str) -> cw.Metric:
            return cw.Metric(
                namespace="AWS/ApiGateway",
                metric_name=name,
                statistic=statistic,
                period=FIVE_MINUTES,
                dimensions_map={
                    "ApiName": settings.api_name,
                    "Stage": settings.stage,
                    "Resource": resource,
                    "Method": method,
                },
            )

        errors = {
            f"e{i}": api_metric("5XXError", "Sum", route.path, method)
            for i, (route, method) in enumerate((r, m) for r in route_table(spec) for m in r.methods)
        }
        ecs_dims = {"ClusterName": service.cluster.cluster_name, "ServiceName": service.service.service_name}
        limit = spec.deploy.scale_in_flight_per_task  # type: ignore[union-attr]
        saturation = cw.MathExpression(
            expression=f"IF(load > {2 * limit} AND tasks >= {spec.deploy.max_tasks}, 1, 0)",  # type: ignore[union-attr]
            using_metrics={
                "load": GpuService.in_flight_metric(spec).with_(period=FIVE_MINUTES),
                "tasks": cw.Metric(
                    namespace="ECS/ContainerInsights",
                    metric_name="RunningTaskCount",
                    dimensions_map=ecs_dims,
                    statistic="Average",
                    period=FIVE_MINUTES,
                ),
            },
            period=FIVE_MINUTES,
        )
        main_route = f"/models/{spec.name}/{{proxy+}}"
        return ModelSignals(
            errors=cw.MathExpression(expression="+".join(errors), using_metrics=errors, period=FIVE_MINUTES),
            throttles=saturation,
            throttles_description="GPU service saturated: at max_tasks with twice the target load per task",
            latency_p99=api_metric("IntegrationLatency", "p99", main_route, "POST"),
            latency_threshold_ms=0.8 * 1000 * spec.deploy.api_timeout_s,
            dead_letter_queues=events.dead_letter_queues,
            extra_widgets=[
                cw.GraphWidget(
                    title="Healthy GPU targets",
                    left=[
                        service.target_group.metrics.healthy_host_count(),
                        service.target_group.metrics.un_healthy_host_count(),
                    ],
                    width=12,
                )
            ],
        )
