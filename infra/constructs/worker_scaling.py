"""How a GPU model's queue worker scales: on its backlog per task, and from zero.

- **target tracking** on (messages visible + in flight) / running worker tasks, at ``backlog_per_task`` (CloudWatch
  metric math in the policy's customized metric: CDK's target tracking takes only plain metrics). A message a task
  holds still counts, so a fleet busy with long jobs is never read as idle; and the tasks that hold messages
  protect themselves from scale-in (the worker, through the ECS agent), so scaling in stops idle tasks only;
- a **step policy** that starts the first task when there is backlog and none runs (a ratio has no value at 0).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

_TargetTracking = appscaling.CfnScalingPolicy.TargetTrackingScalingPolicyConfigurationProperty


class WorkerScaling(Construct):
    """The worker service's scaling policies on its queue's backlog per running task."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        scaling: ecs.ScalableTaskCount,
        queue: sqs.IQueue,
        cluster: ecs.ICluster,
        service: ecs.Ec2Service,
        backlog_per_task: int,
    ) -> None:
        super().__init__(scope, construct_id)
        minute = cdk.Duration.minutes(1)
        self.metrics: dict[str, cw.IMetric] = {
            "visible": queue.metric_approximate_number_of_messages_visible(period=minute, statistic="Maximum"),
            "inflight": queue.metric_approximate_number_of_messages_not_visible(period=minute, statistic="Maximum"),
            "tasks": cw.Metric(
                namespace="ECS/ContainerInsights",
                metric_name="RunningTaskCount",
                dimensions_map={"ClusterName": cluster.cluster_name, "ServiceName": service.service_name},
                statistic="Average",
                period=minute,
            ),
        }
        target = scaling.node.find_child("Target").node.default_child  # the ScalableTarget's CfnScalableTarget
        assert isinstance(target, appscaling.CfnScalableTarget)
        self.backlog_policy = appscaling.CfnScalingPolicy(
            self,
            "BacklogPerTask",
            policy_name=f"{cdk.Names.unique_id(self)}-backlog-per-task",
            policy_type="TargetTrackingScaling",
            scaling_target_id=target.ref,
            target_tracking_scaling_policy_configuration=_TargetTracking(
                target_value=backlog_per_task,
                customized_metric_specification=appscaling.CfnScalingPolicy.CustomizedMetricSpecificationProperty(
                    metrics=[*self._queries(), appscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty(
                        id="backlogpertask",
                        expression="(visible + inflight) / tasks",
                        label="Messages visible or in flight per running worker task",
                        return_data=True,
                    )]
                ),
                scale_out_cooldown=60,
                scale_in_cooldown=300,
            ),
        )
        scaling.scale_on_metric(
            "StartFirstWorker",
            metric=cw.MathExpression(
                expression="IF(tasks < 1, visible + inflight, 0)",
                using_metrics=self.metrics,
                period=minute,
                label="Backlog while no worker task runs",
            ),
            scaling_steps=[
                appscaling.ScalingInterval(upper=0, change=0),
                appscaling.ScalingInterval(lower=1, change=+1),
            ],
            adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            cooldown=cdk.Duration.minutes(3),
        )

    def _queries(self) -> list[appscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty]:
        """The three metrics as the policy's metric-math inputs (not returned themselves)."""
        queries = []
        for name, metric in self.metrics.items():
            stat = metric.to_metric_config().metric_stat
            assert stat is not None
            queries.append(
                appscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty(
                    id=name,
                    return_data=False,
                    metric_stat=appscaling.CfnScalingPolicy.TargetTrackingMetricStatProperty(
                        metric=appscaling.CfnScalingPolicy.TargetTrackingMetricProperty(
                            namespace=stat.namespace,
                            metric_name=stat.metric_name,
                            dimensions=[
                                appscaling.CfnScalingPolicy.TargetTrackingMetricDimensionProperty(
                                    name=d.name, value=d.value
                                )
                                for d in stat.dimensions or []
                            ],
                        ),
                        stat=stat.statistic,
                    ),
                )
            )
        return queries
