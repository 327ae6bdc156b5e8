"""A ``gpu`` model: the same FastAPI app under uvicorn in a CUDA container, on ECS with EC2 GPU capacity.

An Auto Scaling group of GPU instances (ECS GPU-optimized AMI) is the cluster's capacity provider,
so instances follow the tasks. The HTTP service scales on the load its servers report between ``min_tasks`` and
``max_tasks`` and is reached from API Gateway through a VPC link and an internal Network Load Balancer that
health-checks ``/v2/health/ready``. A queue worker (same image) drains the model's job queue and scales on its
backlog per task, down to ``worker_min_tasks`` (0 by default):

- target tracking on (messages visible + in flight) / running worker tasks, at ``worker_backlog_per_task``: a
  message a task holds still counts, so a busy fleet is never read as idle;
- a step policy starts the first task when the backlog is not empty and no task runs (a ratio has no value at 0);
- a task is protected from scale-in while it holds messages (the worker sets ECS task protection through its
  agent), so scaling in only ever stops idle tasks; each held message's visibility is extended by the worker's
  heartbeat until its own deadline (``batch_timeout_s``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from functions.contract import aws_limits
from functions.contract.catalog import GpuDeploy
from functions.contract.deployment import (
    APP_ROOT,
    HEALTH_PATH,
    METRICS_NAMESPACE,
    PORT,
    SERVER_COMMAND,
    WORKER_COMMAND,
    HttpMetric,
    service_name,
)
from infra import nag
from infra.config import ModelSpec
from infra.constructs.common import data_removal_policy, log_retention
from infra.constructs.data_access import DataAccess
from infra.constructs.gpu_hosts import gpu_capacity
from infra.constructs.worker_scaling import WorkerScaling
from infra.settings import EnvironmentConfig

_HEALTH_PROBE = (
    f"python -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PORT}{HEALTH_PATH}', timeout=3)\""
)


LOAD_REPORT_S = 10  # seconds between the server's InFlight reports
# AWS's Fluent Bit for FireLens (public ECR): "stable" is the release AWS marks stable for ECS; pin a version
# tag in a stage that needs byte-identical redeploys.
FLUENT_BIT_IMAGE = "public.ecr.aws/aws-observability/aws-for-fluent-bit:stable"


class GpuService(Construct):
    """ECS cluster on GPU instances, the HTTP service behind a private NLB + VPC link, and a queue worker."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: ModelSpec,
        settings: EnvironmentConfig,
        context_dir: Path,
        vpc: ec2.IVpc,
        access: DataAccess,
        table: dynamodb.ITable,
        queue: sqs.IQueue,
        logs_bucket: s3.IBucket,
        alarm_topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        if not isinstance(spec.deploy, GpuDeploy):
            raise TypeError(f"model {spec.name!r} is not a gpu target")
        deploy = self._deploy = spec.deploy
        self._vpc_cidr = settings.vpc_cidr
        self._streams = spec.streams
        instance = aws_limits.GPU_INSTANCES[deploy.instance_type]
        worker_max = deploy.worker_max_tasks if deploy.worker_max_tasks is not None else deploy.max_tasks
        self.cluster = ecs.Cluster(self, "Cluster", vpc=vpc, container_insights_v2=ecs.ContainerInsights.ENHANCED)
        tasks_per_instance = instance.gpus
        max_instances = math.ceil((deploy.max_tasks + worker_max) / tasks_per_instance)
        self.capacity = gpu_capacity(self, self.cluster, deploy, vpc, max_instances, alarm_topic)
        self.cluster.add_asg_capacity_provider(self.capacity)

        image = ecs.ContainerImage.from_docker_image_asset(
            ecr_assets.DockerImageAsset(
                self,
                "Image",
                directory=str(context_dir),
                platform=ecr_assets.Platform.LINUX_AMD64,
                build_args={"MODEL_NAME": spec.name},
            )
        )
        bundled_at = f"{APP_ROOT}/artifacts"
        # onnxruntime-gpu: CUDA first, CPU for any op CUDA lacks; concurrent requests share GPU runs
        server_environment = access.environment(
            spec,
            settings,
            bundled_at=bundled_at,
            execution_providers="cuda,cpu",
            microbatch=True,
            microbatch_wait_ms=2,
            load_metrics_interval_s=LOAD_REPORT_S,
            # API Gateway's integration timeout: generation answers within it (finish_reason "length")
            request_timeout_s=float(deploy.api_timeout_s),
        ).variables()
        # The worker runs S3 jobs and SQS replies: the idempotency table, and the queue it polls.
        worker_environment = access.environment(
            spec,
            settings,
            bundled_at=bundled_at,
            table=table,
            announce_jobs=True,
            queue_url=queue.queue_url,
            message_budget_s=deploy.batch_timeout_s,
            execution_providers="cuda,cpu",
            batch_memory_mb=deploy.memory_mb,
        ).variables()
        log_group = logs.LogGroup(
            self,
            "Logs",
            retention=log_retention(settings),
            removal_policy=data_removal_policy(settings),
        )
        cpu = deploy.cpu_units or (instance.vcpus * 1024 - 512)

        server_task = self._task_definition(
            "Server", image, SERVER_COMMAND, server_environment, log_group, cpu, deploy, serves_http=True
        )
        self.task_security_group = ec2.SecurityGroup(
            self, "TaskSecurityGroup", vpc=vpc, description=f"maas {spec.name} GPU tasks", allow_all_outbound=True
        )
        # Rolling deploys start the new task first: a GPU per task means one more instance for a while.
        self.service = self._service("Service", server_task, healthy_percent=(100, 200), load_balanced=True)
        scaling = self.service.auto_scale_task_count(min_capacity=deploy.min_tasks, max_capacity=deploy.max_tasks)
        # What the tasks really carry: requests in flight or waiting, as each server reports it (Average across
        # the service's tasks = load per task). CPU percent says little about a GPU server.
        scaling.scale_to_track_custom_metric(
            "InFlightScaling",
            metric=self.in_flight_metric(spec),
            target_value=deploy.scale_in_flight_per_task,
            scale_in_cooldown=cdk.Duration.minutes(5),
            scale_out_cooldown=cdk.Duration.minutes(1),
        )
        self.load_balancer, self.target_group = self._load_balancer(spec, vpc, logs_bucket)
        self.target_group.add_target(self.service)
        self.vpc_link = apigw.VpcLink(
            self, "VpcLink", targets=[self.load_balancer], description=f"API Gateway → maas {spec.name} NLB"
        )

        worker_task = self._task_definition(
            "Worker", image, WORKER_COMMAND, worker_environment, log_group, cpu, deploy, serves_http=False
        )
        batch = access.worker_statements(spec)
        for statement in batch:
            worker_task.task_role.add_to_principal_policy(statement)
        access.acknowledge_prefix_wildcards(self, batch)
        worker_task.task_role.add_to_principal_policy(access.idempotency_statement(table))
        queue.grant_consume_messages(worker_task.task_role)
        # The worker protects itself from scale-in while it holds messages (ECS agent endpoint -> this API).
        worker_task.task_role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="OwnScaleInProtection",
                actions=["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"],
                resources=[self._tasks_arn()],
            )
        )
        nag.acknowledge(
            worker_task.task_role,
            f"AwsSolutions-IAM5[Resource::{self._tasks_arn(shown=True)}]",
            "Scale-in protection of this cluster's own tasks (task ids exist only at run time)",
        )
        self.worker = self._service("Worker", worker_task, healthy_percent=(0, 100), load_balanced=False)
        worker_scaling = self.worker.auto_scale_task_count(
            min_capacity=deploy.worker_min_tasks, max_capacity=max(worker_max, 1)
        )
        self.worker_scaling = WorkerScaling(
            self, "WorkerScaling", scaling=worker_scaling, queue=queue, cluster=self.cluster, service=self.worker,
            backlog_per_task=deploy.worker_backlog_per_task,
        )
        for task in (server_task, worker_task):
            nag.acknowledge(
                task.obtain_execution_role(),
                "AwsSolutions-IAM5[Resource::*]",
                "ecr:GetAuthorizationToken has no resource-level permissions; image pulls are scoped to the repo",
            )
        nag.acknowledge(
            self,
            "AwsSolutions-ECS2",
            "Container environment holds only non-secret settings (bucket, prefixes, table, queue URL)",
        )

    def _tasks_arn(self, *, shown: bool = False) -> str:
        stack = cdk.Stack.of(self)
        partition = "<AWS::Partition>" if shown and cdk.Token.is_unresolved(stack.partition) else stack.partition
        cluster = f"<{cdk.Stack.of(self).get_logical_id(self.cluster.node.default_child)}>" if shown else \
            self.cluster.cluster_name  # type: ignore[arg-type]
        return f"arn:{partition}:ecs:{stack.region}:{stack.account}:task/{cluster}/*"

    def integration(self, http_method: str, path: str) -> apigw.Integration:
        """An HTTP proxy integration through the VPC link to the NLB, keeping the request path; streamed (STREAM
        transfer mode) for a model whose responses stream, so tokens reach the client as uvicorn sends them."""
        uri_path = path.replace("{proxy+}", "{proxy}")
        return apigw.Integration(
            type=apigw.IntegrationType.HTTP_PROXY,
            integration_http_method=http_method,
            uri=f"http://{self.load_balancer.load_balancer_dns_name}{uri_path}",
            options=apigw.IntegrationOptions(
                connection_type=apigw.ConnectionType.VPC_LINK,
                vpc_link=self.vpc_link,
                timeout=cdk.Duration.seconds(self._deploy.api_timeout_s),
                request_parameters=(
                    {"integration.request.path.proxy": "method.request.path.proxy"} if "{proxy}" in uri_path else None
                ),
                response_transfer_mode=apigw.ResponseTransferMode.STREAM if self._streams else None,
            ),
        )

    @staticmethod
    def in_flight_metric(spec: ModelSpec) -> cw.Metric:
        """The server's own load report, averaged over its tasks each minute."""
        return cw.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=HttpMetric.IN_FLIGHT.value,
            dimensions_map={"service": service_name(spec.name)},
            statistic="Average",
            period=cdk.Duration.minutes(1),
        )

    def _service(
        self,
        construct_id: str,
        task: ecs.Ec2TaskDefinition,
        *,
        healthy_percent: tuple[int, int],
        load_balanced: bool,
    ) -> ecs.Ec2Service:
        """An ECS service on the GPU capacity provider, in the private subnets, rolled back on failure.

        No desired count: its scalable target keeps it between min and max, and a deploy never resets a
        count that scaling chose (``@aws-cdk/aws-ecs:removeDefaultDesiredCount`` in cdk.json)."""
        return ecs.Ec2Service(
            self,
            construct_id,
            cluster=self.cluster,
            task_definition=task,
            min_healthy_percent=healthy_percent[0],
            max_healthy_percent=healthy_percent[1],
            # instance start + image pull + model load, before the load balancer's checks count
            health_check_grace_period=cdk.Duration.minutes(3) if load_balanced else None,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            capacity_provider_strategies=[
                ecs.CapacityProviderStrategy(capacity_provider=self.capacity.capacity_provider_name, weight=1)
            ],
            security_groups=[self.task_security_group],
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            enable_ecs_managed_tags=True,
        )

    def _task_definition(
        self,
        construct_id: str,
        image: ecs.ContainerImage,
        command: Sequence[str],
        environment: dict[str, str],
        log_group: logs.ILogGroup,
        cpu: int,
        deploy: GpuDeploy,
        *,
        serves_http: bool,
    ) -> ecs.Ec2TaskDefinition:
        task = ecs.Ec2TaskDefinition(self, f"{construct_id}Task", network_mode=ecs.NetworkMode.AWS_VPC)
        container = task.add_container(
            construct_id.lower(),
            image=image,
            command=list(command),
            environment=environment,
            gpu_count=1,
            cpu=cpu,
            memory_reservation_mib=deploy.memory_mb,
            logging=ecs.LogDrivers.firelens(
                options={
                    "Name": "cloudwatch_logs",
                    "region": cdk.Stack.of(self).region,
                    "log_group_name": log_group.log_group_name,
                    "log_stream_prefix": f"{construct_id.lower()}/",
                    "log_format": "json/emf",
                    "auto_create_group": "false",
                }
            ),
            stop_timeout=cdk.Duration.seconds(min(120, deploy.batch_timeout_s)),
            readonly_root_filesystem=False,  # the runtime caches artifacts under /tmp
            health_check=(
                ecs.HealthCheck(
                    command=["CMD-SHELL", _HEALTH_PROBE],
                    interval=cdk.Duration.seconds(15),
                    timeout=cdk.Duration.seconds(5),
                    retries=3,
                    start_period=cdk.Duration.seconds(120),
                )
                if serves_http
                else None
            ),
        )
        # (added after the app container, which stays the task's default container for the load balancer)
        # FireLens ships the container's stdout to CloudWatch Logs with the EMF header, so the metrics the runtime
        # prints (per-request metrics, the InFlight reports the service scales on) become CloudWatch metrics, as
        # they do from Lambda. The awslogs driver alone would store them as plain log lines.
        task.add_firelens_log_router(
            "LogRouter",
            image=ecs.ContainerImage.from_registry(FLUENT_BIT_IMAGE),
            firelens_config=ecs.FirelensConfig(type=ecs.FirelensLogRouterType.FLUENTBIT),
            logging=ecs.LogDrivers.aws_logs(stream_prefix=f"{construct_id.lower()}-router", log_group=log_group),
            memory_reservation_mib=64,
            essential=True,
        )
        log_group.grant_write(task.task_role)
        if serves_http:
            container.add_port_mappings(ecs.PortMapping(container_port=PORT, protocol=ecs.Protocol.TCP))
        return task

    def _load_balancer(
        self, spec: ModelSpec, vpc: ec2.IVpc, logs_bucket: s3.IBucket
    ) -> tuple[elbv2.NetworkLoadBalancer, elbv2.NetworkTargetGroup]:
        nlb_security_group = ec2.SecurityGroup(
            self,
            "LoadBalancerSecurityGroup",
            vpc=vpc,
            description=f"maas {spec.name} internal NLB",
            allow_all_outbound=False,
        )
        nlb_security_group.add_ingress_rule(
            ec2.Peer.ipv4(self._vpc_cidr), ec2.Port.tcp(80), "API Gateway VPC link and in-VPC callers"
        )
        nlb_security_group.add_egress_rule(self.task_security_group, ec2.Port.tcp(PORT), "to the GPU tasks")
        self.task_security_group.add_ingress_rule(nlb_security_group, ec2.Port.tcp(PORT), "from the NLB")
        nlb = elbv2.NetworkLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=False,
            cross_zone_enabled=True,
            security_groups=[nlb_security_group],
            # VPC link (PrivateLink) traffic is authorised by API Gateway's IAM auth, not by source IP.
            enforce_security_group_inbound_rules_on_private_link_traffic=False,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
        )
        nlb.log_access_logs(logs_bucket, f"nlb/{spec.name}")
        target_group = elbv2.NetworkTargetGroup(
            self,
            "Targets",
            vpc=vpc,
            port=PORT,
            protocol=elbv2.Protocol.TCP,
            target_type=elbv2.TargetType.IP,
            deregistration_delay=cdk.Duration.seconds(30),
            health_check=elbv2.HealthCheck(
                protocol=elbv2.Protocol.HTTP,
                path=HEALTH_PATH,
                port=str(PORT),
                interval=cdk.Duration.seconds(15),
                healthy_threshold_count=2,
                unhealthy_threshold_count=3,
            ),
        )
        nlb.add_listener("Http", port=80, protocol=elbv2.Protocol.TCP, default_target_groups=[target_group])
        return nlb, target_group
