"""The GPU hosts of a ``gpu`` model: the EC2 capacity its ECS cluster runs on, and the hosts' own role."""

from __future__ import annotations

from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from constructs import Construct

from functions.contract.catalog import GpuDeploy
from infra import nag


def gpu_capacity(
    scope: Construct, cluster: ecs.Cluster, deploy: GpuDeploy, vpc: ec2.IVpc, max_instances: int, topic: sns.ITopic
) -> ecs.AsgCapacityProvider:
    """The cluster's capacity provider: an Auto Scaling group of GPU instances (ECS GPU-optimized AMI, IMDSv2,
    encrypted gp3), scaled by ECS to follow the tasks. Constructs are created in ``scope`` (their logical ids
    are the service's own)."""
    security_group = ec2.SecurityGroup(
        scope, "InstanceSecurityGroup", vpc=vpc, description="maas GPU hosts", allow_all_outbound=True
    )
    user_data = ec2.UserData.for_linux()
    user_data.add_commands("echo ECS_ENABLE_GPU_SUPPORT=true >> /etc/ecs/ecs.config")
    template = ec2.LaunchTemplate(
        scope,
        "LaunchTemplate",
        machine_image=ecs.EcsOptimizedImage.amazon_linux2023(ecs.AmiHardwareType.GPU),
        instance_type=ec2.InstanceType(deploy.instance_type),
        security_group=security_group,
        user_data=user_data,
        # Immutable to CDK: the ECS integration would add "ecs:Submit*"; the role gets explicit actions.
        role=_instance_role(scope, cluster).without_policy_updates(),
        require_imdsv2=True,
        http_put_response_hop_limit=1,  # tasks (awsvpc) cannot reach the instance's credentials
        detailed_monitoring=True,
        block_devices=[
            ec2.BlockDevice(
                device_name="/dev/xvda",
                volume=ec2.BlockDeviceVolume.ebs(
                    100, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3, delete_on_termination=True
                ),
            )
        ],
    )
    group = autoscaling.AutoScalingGroup(
        scope,
        "Hosts",
        vpc=vpc,
        vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
        launch_template=template,
        min_capacity=0,
        max_capacity=max_instances,
        notifications=[autoscaling.NotificationConfiguration(topic=topic)],
    )
    nag.acknowledge(
        group,
        "AwsSolutions-EC29",
        "Instances belong to an ECS capacity provider with managed termination protection",
    )
    return ecs.AsgCapacityProvider(
        scope,
        "CapacityProvider",
        auto_scaling_group=group,
        enable_managed_scaling=True,
        enable_managed_termination_protection=True,
        enable_managed_draining=True,
        target_capacity_percent=100,
        machine_image_type=ecs.MachineImageType.AMAZON_LINUX_2,
    )

def _instance_role(scope: Construct, cluster: ecs.Cluster) -> iam.Role:
    """The GPU hosts' role: what the ECS agent needs for this cluster, every action spelled out."""
    role = iam.Role(scope, "InstanceRole", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"))
    cluster_arn = cluster.cluster_arn
    role.add_to_policy(
        iam.PolicyStatement(
            sid="EcsAgentOnCluster",
            actions=[
                "ecs:RegisterContainerInstance",
                "ecs:DeregisterContainerInstance",
                "ecs:SubmitAttachmentStateChanges",
                "ecs:SubmitContainerStateChange",
                "ecs:SubmitTaskStateChange",
            ],
            resources=[cluster_arn],
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            sid="EcsAgentOnInstances",
            actions=["ecs:Poll", "ecs:StartTelemetrySession", "ecs:UpdateContainerInstancesState"],
            resources=["*"],  # container instances do not exist yet; the condition pins the cluster
            conditions={"ArnEquals": {"ecs:cluster": cluster_arn}},
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            sid="EcsAgentDiscovery",
            actions=["ecs:DiscoverPollEndpoint"],
            resources=["*"],
        )
    )
    nag.acknowledge(
        role,
        "AwsSolutions-IAM5[Resource::*]",
        "ECS agent: DiscoverPollEndpoint has no resource type; Poll/StartTelemetrySession are pinned "
        "by the ecs:cluster condition",
    )
    return role
