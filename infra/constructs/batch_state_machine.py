"""The state machine that runs S3 jobs too large for one invocation: plan → Distributed Map over chunks → merge.

Every step is one call of the model's chunk function (``functions.handlers.chunk``, its ``live`` alias):

- **Plan** cuts the announced object into chunks of whole windows of records (about ``chunk_bytes`` of input
  each) and writes the chunk list as JSON Lines under ``<output prefix>.runs/<run>/``; what cannot be cut (an
  image, a rejected object) it runs the direct way and the execution ends (``Route``).
- **Chunks** is a Distributed Map: its ItemReader reads that list (``s3:getObject``, ``JSONL``), its ItemBatcher
  hands each chunk to a child execution with the run in ``BatchInput``, at most ``MaxConcurrency`` (the stage's
  ``batch_map_concurrency``) at once; ``ToleratedFailurePercentage`` is 0 (the output needs every chunk), a
  chunk's Lambda call is retried on any error (a record's problem is an error line, never an error), and the
  ResultWriter keeps the children's results beside the run. The ItemReader reads the plan's list, not the object
  itself: Step Functions' own JSONL reader fails the whole Map Run on a line that is not JSON, where maas owes
  that line an error line; and a chunk handed over by its byte range keeps lines up to 1 MiB, exact line numbers
  and CSV row ids, and the direct path's windows.
- **Merge** concatenates the chunk outputs in order (S3 copies them), writes the summary, announces the job and
  deletes the run's files.

A failed execution (a chunk still failing after its retries, a timeout) stops where it failed, so
``redrive-execution`` resumes it: the Map Run redrives its failed children only, and chunks whose output was
committed are skipped by the handler. EventBridge's execution status event then calls the chunk function, which
writes a ``failed`` summary naming the redrive; an alarm fires on failed, timed-out or aborted executions.
"""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from functions.contract.batch_plan import BatchSizing
from functions.contract.deployment import JOB_TIMEOUT_S, RUNS_DIR
from infra import nag
from infra.config import ModelSpec
from infra.constructs.common import data_removal_policy, log_retention
from infra.constructs.data_access import DataAccess
from infra.settings import EnvironmentConfig

CHUNK_FUNCTION = "ChunkFunctionArn"  # the definition's substitution for the chunk function's alias ARN
# Lambda's own transient failures: retried quickly and often. Anything else the function raised (S3 down, a
# crash, a timeout): retried a few times with backoff, then the Map Run fails and the execution waits for a redrive.
LAMBDA_TRANSIENT = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ClientExecutionTimeoutException",
]


def _retry(attempts: int) -> list[dict[str, Any]]:
    return [
        {"ErrorEquals": LAMBDA_TRANSIENT, "IntervalSeconds": 2, "MaxAttempts": 6, "BackoffRate": 2.0,
         "JitterStrategy": "FULL"},
        {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 10, "MaxAttempts": attempts, "BackoffRate": 3.0,
         "JitterStrategy": "FULL"},
    ]


def _invoke(payload: dict[str, Any], comment: str, **fields: Any) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Comment": comment,
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": f"${{{CHUNK_FUNCTION}}}", **payload},
        "Retry": _retry(2),
        **fields,
    }


def definition(*, map_concurrency: int, chunk_attempts: int = 3) -> dict[str, Any]:
    """The Amazon States Language definition (JSONPath); the chunk function's ARN is a substitution."""
    chunk = _invoke({"Payload.$": "$"}, "One chunk: its byte range through the record code into its part",
                    ResultSelector={"chunks.$": "$.Payload.chunks"}, End=True)
    chunk["Retry"] = _retry(chunk_attempts)
    return {
        "Comment": "maas: an S3 batch job too large for one invocation, in chunks (docs/batch.md)",
        "TimeoutSeconds": JOB_TIMEOUT_S,
        "StartAt": "Plan",
        "States": {
            "Plan": _invoke(
                {"Payload": {"step": "plan", "event.$": "$", "execution.$": "$$.Execution.Id"}},
                "Cut the object into chunks (or run what cannot be cut the direct way)",
                ResultSelector={"plan.$": "$.Payload"}, OutputPath="$.plan", Next="Route",
            ),
            "Route": {
                "Type": "Choice",
                "Comment": "Chunks to run; otherwise done (ran directly, already done, a duplicate, superseded)",
                "Choices": [{"Variable": "$.route", "StringEquals": "chunks", "Next": "Chunks"}],
                "Default": "Done",
            },
            "Chunks": {
                "Type": "Map",
                "Comment": "Every chunk in a child execution of its own, MaxConcurrency at a time",
                "Label": "Chunks",
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:getObject",
                    "ReaderConfig": {"InputType": "JSONL"},
                    "Parameters": {"Bucket.$": "$.bucket", "Key.$": "$.manifest_key"},
                },
                "ItemBatcher": {"MaxItemsPerBatch": 1, "BatchInput": {"step": "chunk", "run.$": "$.run"}},
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "Chunk",
                    "States": {"Chunk": chunk},
                },
                "MaxConcurrency": map_concurrency,
                "ToleratedFailurePercentage": 0,
                "ResultWriter": {
                    "Resource": "arn:aws:states:::s3:putObject",
                    "Parameters": {"Bucket.$": "$.bucket", "Prefix.$": "$.results_prefix"},
                },
                "ResultPath": "$.map",
                "Next": "Merge",
            },
            "Merge": _invoke(
                {"Payload": {"step": "merge", "run.$": "$.run"}},
                "The chunk outputs in order into one output, the summary, the announcement; the run's files go",
                ResultSelector={"summary.$": "$.Payload"}, OutputPath="$.summary", End=True,
            ),
            "Done": {"Type": "Succeed", "Comment": "Nothing to chunk"},
        },
    }


class BatchStateMachine(Construct):
    """The model's chunked-job state machine, its least-privilege role, its logs and its failure alarm."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: ModelSpec,
        settings: EnvironmentConfig,
        sizing: BatchSizing,
        access: DataAccess,
        chunk_function: lambda_.IFunction,
        alarm_topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.state_machine_name = f"{settings.prefix}-{spec.name}-jobs"
        # ARNs as plain strings from the fixed name: the role can name its own state machine without a cycle
        arn = f"arn:{stack.partition}:states:{stack.region}:{stack.account}"
        self.state_machine_arn = f"{arn}:stateMachine:{self.state_machine_name}"
        executions = f"{arn}:execution:{self.state_machine_name}"
        runs = access.object_arn(access.batch_bucket_name, f"{spec.output_prefix}{RUNS_DIR}*")
        self.role = iam.Role(
            self, "Role", assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
            description=f"maas {spec.name} chunked S3 jobs (Step Functions)",
        )
        statements = [
            iam.PolicyStatement(sid="InvokeChunkFunction", actions=["lambda:InvokeFunction"],
                                resources=[chunk_function.function_arn]),
            # the Distributed Map's ItemReader reads the plan's chunk list; its ResultWriter writes beside it
            iam.PolicyStatement(sid="ReadChunkListWriteResults",
                                actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload",
                                         "s3:ListMultipartUploadParts"], resources=[runs]),
            access.kms_via_s3("DataKeyViaS3ReadWrite", ["kms:Decrypt", "kms:GenerateDataKey"]),
            # the Map's child executions are executions of this state machine
            iam.PolicyStatement(sid="RunChildExecutions", actions=["states:StartExecution"],
                                resources=[self.state_machine_arn]),
            # ... which it watches, stops, and redrives when the parent execution is redriven
            iam.PolicyStatement(sid="ManageChildExecutions",
                                actions=["states:DescribeExecution", "states:StopExecution",
                                         "states:RedriveExecution"],
                                resources=[f"{executions}/*"]),
        ]
        for statement in statements:
            self.role.add_to_policy(statement)
        log_group = logs.LogGroup(
            self, "Logs", log_group_name=f"/aws/vendedlogs/states/{self.state_machine_name}",
            retention=log_retention(settings), removal_policy=data_removal_policy(settings),
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=self.state_machine_name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(json.dumps(definition(
                map_concurrency=sizing.map_concurrency), indent=1)),
            definition_substitutions={CHUNK_FUNCTION: chunk_function.function_arn},
            role=self.role,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
            tracing_enabled=True,
            timeout=cdk.Duration.seconds(JOB_TIMEOUT_S),
        )
        self.failures = cw.MathExpression(
            expression="failed + timedout + aborted",
            using_metrics={
                "failed": self.state_machine.metric_failed(period=cdk.Duration.minutes(5)),
                "timedout": self.state_machine.metric_timed_out(period=cdk.Duration.minutes(5)),
                "aborted": self.state_machine.metric_aborted(period=cdk.Duration.minutes(5)),
            },
            period=cdk.Duration.minutes(5),
            label="Executions failed, timed out or aborted",
        )
        self.alarm = cw.Alarm(
            self, "ExecutionsFailed",
            alarm_description=(f"{settings.prefix}-{spec.name}: a chunked S3 job's execution failed, timed out or "
                               "was aborted; its summary says failed and how to redrive it"),
            metric=self.failures, threshold=0, evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        self.alarm.add_alarm_action(actions.SnsAction(alarm_topic))
        self.alarm.add_ok_action(actions.SnsAction(alarm_topic))
        runs_shown = runs.replace(f"arn:{stack.partition}:", "arn:<AWS::Partition>:", 1) \
            if cdk.Token.is_unresolved(stack.partition) else runs
        nag.acknowledge(self.role, f"AwsSolutions-IAM5[Resource::{runs_shown}]",
                        "Object-level access, wildcard only below this model's own runs folder (plan lists, results)")
        nag.acknowledge(self.role, "AwsSolutions-IAM5[Resource::*]",
                        "CloudWatch Logs vended-log delivery and X-Ray trace actions do not support resource-level "
                        "permissions (added by CDK for the state machine's logging and tracing)")
        for shown in (f"{executions}/*",):
            nag.acknowledge(self.role, f"AwsSolutions-IAM5[Resource::{_nag_form(stack, shown)}]",
                            "The Distributed Map's child executions of this one state machine (their ids are made "
                            "at run time); also the redrive of its own executions")


def _nag_form(stack: cdk.Stack, value: str) -> str:
    """How cdk-nag prints a resource made of pseudo-parameters (``<AWS::Region>``...)."""
    for token, shown in ((stack.partition, "<AWS::Partition>"), (stack.region, "<AWS::Region>"),
                         (stack.account, "<AWS::AccountId>")):
        if cdk.Token.is_unresolved(token):
            value = value.replace(token, shown)
    return value
