"""GIVEN the synthesized apps THEN uploads reach each model through EventBridge (the batch bucket's own
notification setting, no custom resource), split by size at the threshold the committed benchmark gives; larger
ones start a Distributed Map state machine whose definition obeys the States Language's rules for the distributed
mode, whose role holds only what its steps use, whose failures alarm and reach the chunk function; and the local
executor hands the chunk handler exactly the payloads the definition builds. (cfn-lint's E3601 checks every
template's definition too: test_compliance.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from functions.batch.chunked_jobs import chunk_batch, merge_step, plan_step
from functions.contract.batch_plan import DEFAULT_MAP_CONCURRENCY
from infra.config import load_models
from infra.constructs.batch_state_machine import CHUNK_FUNCTION, definition
from tests.infra import asl
from tests.infra.conftest import ACCOUNT, REGION, REPO, STAGE, Synth, function_handler, lambda_entry

BATCH_BUCKET = f"maas-{STAGE}-batch-{ACCOUNT}-{REGION}"


def _lambda_stacks(app: Synth) -> dict[str, str]:
    return {m: s for m, s in app.model_stacks().items() if "-gpu" not in m}


def _resources(app: Synth, stack: str, kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in app.json(stack)["Resources"].items() if r["Type"] == kind}


def _state_machine(app: Synth, stack: str) -> tuple[str, dict[str, Any]]:
    ((logical_id, machine),) = _resources(app, stack, "AWS::StepFunctions::StateMachine").items()
    return logical_id, machine["Properties"]


def test_the_definition_obeys_the_rules_of_a_distributed_map() -> None:
    body = definition(map_concurrency=DEFAULT_MAP_CONCURRENCY)
    assert asl.problems(body) == []
    chunks = body["States"]["Chunks"]
    assert chunks["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert chunks["ItemReader"]["ReaderConfig"] == {"InputType": "JSONL"}
    assert chunks["ItemBatcher"]["MaxItemsPerBatch"] == 1 and chunks["ToleratedFailurePercentage"] == 0
    assert chunks["ResultWriter"]["Resource"] == "arn:aws:states:::s3:putObject"
    assert chunks["MaxConcurrency"] == DEFAULT_MAP_CONCURRENCY and "Catch" not in chunks  # a failure stays redrivable
    (retry_lambda, retry_all) = chunks["ItemProcessor"]["States"]["Chunk"]["Retry"]
    assert retry_all["ErrorEquals"] == ["States.ALL"] and retry_all["MaxAttempts"] >= 2
    assert "Lambda.TooManyRequestsException" in retry_lambda["ErrorEquals"]


@pytest.mark.parametrize("broken", [
    lambda d: d["States"]["Chunks"]["ItemProcessor"]["ProcessorConfig"].update(Mode="INLINE"),
    lambda d: d["States"]["Chunks"]["ItemProcessor"]["ProcessorConfig"].pop("ExecutionType"),
    lambda d: d["States"]["Chunks"]["ItemReader"]["ReaderConfig"].update(InputType="NDJSON"),
    lambda d: d["States"]["Chunks"].update(ToleratedFailurePercentage=101),
    lambda d: d["States"]["Chunks"]["ItemBatcher"].update(MaxItemsPerBatch=0),
    lambda d: d["States"]["Chunks"]["ResultWriter"].update(Resource="arn:aws:states:::s3:getObject"),
    lambda d: d["States"]["Plan"]["Retry"].reverse(),
    lambda d: d["States"]["Route"].update(Default="Nowhere"),
    lambda d: d["States"]["Merge"].update(Next="Done"),
    lambda d: d["States"].update(Orphan={"Type": "Succeed"}),
    lambda d: d["States"]["Chunks"]["ItemReader"]["Parameters"].update({"Key.$": "manifest_key"}),
])
def test_the_checker_refuses_what_the_service_refuses(broken: Any) -> None:
    body = definition(map_concurrency=10)
    broken(body)
    assert asl.problems(body)


def test_each_lambda_model_has_its_state_machine_with_logs_tracing_and_the_stage_concurrency(
    default_app: Synth,
) -> None:
    for model, stack in _lambda_stacks(default_app).items():
        _, props = _state_machine(default_app, stack)
        assert props["StateMachineName"] == f"maas-{STAGE}-{model}-jobs" and props["StateMachineType"] == "STANDARD"
        assert json.loads(props["DefinitionString"]) == definition(map_concurrency=DEFAULT_MAP_CONCURRENCY)
        alias = props["DefinitionSubstitutions"][CHUNK_FUNCTION]["Ref"]
        resources = default_app.json(stack)["Resources"]
        function = resources[resources[alias]["Properties"]["FunctionName"]["Ref"]]["Properties"]
        assert resources[alias]["Properties"]["Name"] == "live"
        assert function_handler(function) == "functions.handlers.chunk.handler"
        assert props["LoggingConfiguration"]["Level"] == "ALL" and props["TracingConfiguration"] == {"Enabled": True}


def test_map_concurrency_comes_from_the_stage_config(build: Any) -> None:
    app = build({"embedder": lambda_entry()}, batchMapConcurrency=37)
    stack = next(s for s in app.node.children if getattr(s, "stack_name", "") == f"maas-{STAGE}-model-embedder")
    machines = Template.from_stack(stack).find_resources("AWS::StepFunctions::StateMachine")
    (props,) = [m["Properties"] for m in machines.values()]
    assert json.loads(props["DefinitionString"])["States"]["Chunks"]["MaxConcurrency"] == 37


def test_the_state_machine_role_holds_only_what_its_steps_use(default_app: Synth) -> None:
    for model, stack in _lambda_stacks(default_app).items():
        _, props = _state_machine(default_app, stack)
        role = props["RoleArn"]["Fn::GetAtt"][0]
        policies = [r["Properties"] for r in _resources(default_app, stack, "AWS::IAM::Policy").values()
                    if {"Ref": role} in r["Properties"]["Roles"]]
        statements = {s.get("Sid", "cdk"): s for p in policies for s in p["PolicyDocument"]["Statement"]}
        runs = f"arn:aws:s3:::{BATCH_BUCKET}/outputs/{model}/.runs/*"
        name = f"maas-{STAGE}-{model}-jobs"
        assert statements["InvokeChunkFunction"]["Resource"] == props["DefinitionSubstitutions"][CHUNK_FUNCTION]
        assert statements["ReadChunkListWriteResults"]["Resource"] == runs
        assert statements["RunChildExecutions"] == {
            "Sid": "RunChildExecutions", "Action": "states:StartExecution", "Effect": "Allow",
            "Resource": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"}
        executions = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{name}/*"
        assert statements["ManageChildExecutions"]["Resource"] == executions
        assert statements["DataKeyViaS3ReadWrite"]["Condition"] == {
            "StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}}
        # what CDK adds for logging and tracing, which have no resource-level permissions: nothing else on "*"
        star = [s for s in statements.values() if s["Resource"] == "*"]
        assert all(a.startswith(("logs:", "xray:")) for s in star for a in s["Action"])
        actions = [a for s in statements.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else
                                                             s["Action"])]
        assert not any(a.endswith("*") for a in actions) and "s3:DeleteObject" not in actions


def test_uploads_are_routed_by_size_at_the_threshold_of_the_committed_benchmark(default_app: Synth) -> None:
    specs = {s.name: s for s in load_models(
        _catalog(), artifacts_dir=Path("/nonexistent"), allow_missing_artifacts=True,
        runtime_bytes={"arm64": 0, "x86_64": 0}, api_timeout_quota_s=29)}
    for model, stack in _lambda_stacks(default_app).items():
        sizing = specs[model].batch_sizing(REPO / "docs" / "benchmarks", DEFAULT_MAP_CONCURRENCY)
        threshold = sizing.route_threshold_bytes
        rules = _resources(default_app, stack, "AWS::Events::Rule")
        by_size = {}
        for rule in rules.values():
            pattern = rule["Properties"]["EventPattern"]
            if pattern["source"] == ["aws.s3"]:
                (size,) = pattern["detail"]["object"]["size"]
                by_size[tuple(size["numeric"])] = rule["Properties"]["Targets"]
        assert set(by_size) == {("<=", threshold), (">", threshold)}, model
        small, large = by_size[("<=", threshold)], by_size[(">", threshold)]
        resources = default_app.json(stack)["Resources"]
        alias = resources[small[0]["Arn"]["Ref"]]
        assert function_handler(resources[alias["Properties"]["FunctionName"]["Ref"]]["Properties"]) == \
            "functions.handlers.s3.handler"
        machine_id, _ = _state_machine(default_app, stack)
        assert large[0]["Arn"] == {"Ref": machine_id} and "RoleArn" in large[0]
        assert all("DeadLetterConfig" in t for t in small + large)
    minilm = specs["minilm-embed"].batch_sizing(REPO / "docs" / "benchmarks", DEFAULT_MAP_CONCURRENCY)
    assert "minilm-embed.json" in minilm.rate.source and 5 * 2**20 < minilm.route_threshold_bytes < 7 * 2**20


def test_failed_executions_alarm_and_reach_the_chunk_function(default_app: Synth) -> None:
    for stack in _lambda_stacks(default_app).values():
        machine_id, _ = _state_machine(default_app, stack)
        template = default_app.template(stack)
        template.has_resource_properties("AWS::Events::Rule", {
            "EventPattern": {"source": ["aws.states"], "detail-type": ["Step Functions Execution Status Change"],
                             "detail": {"stateMachineArn": [{"Ref": machine_id}],
                                        "status": ["FAILED", "TIMED_OUT", "ABORTED"]}},
            "Targets": [Match.object_like({"DeadLetterConfig": Match.any_value()})],
        })
        alarms = [a["Properties"] for a in _resources(default_app, stack, "AWS::CloudWatch::Alarm").values()
                  if "ExecutionsFailed" in json.dumps(a)]
        assert len(alarms) == 1 and alarms[0]["AlarmActions"] and alarms[0]["OKActions"]
        names = {m["MetricStat"]["Metric"]["MetricName"] for m in alarms[0]["Metrics"] if "MetricStat" in m}
        assert names == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"}
        assert alarms[0]["Threshold"] == 0


def test_the_batch_bucket_notifies_eventbridge_itself_and_run_files_expire(default_app: Synth) -> None:
    for name in default_app.stacks:
        assert not _resources(default_app, name, "Custom::S3BucketNotifications"), name
    (bucket,) = [r["Properties"] for r in _resources(default_app, f"maas-{STAGE}-shared", "AWS::S3::Bucket").values()
                 if r["Properties"].get("BucketName") == BATCH_BUCKET]
    assert bucket["NotificationConfiguration"] == {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
    rules = {r.get("Prefix"): r for r in bucket["LifecycleConfiguration"]["Rules"]}
    for model in default_app.model_stacks():
        assert rules[f"outputs/{model}/.runs/"]["ExpirationInDays"] == 15


def test_the_local_executor_hands_the_handler_what_the_definition_builds() -> None:
    """The definition's payload templates and the local executor's payloads have the same fields."""
    states = definition(map_concurrency=1)["States"]
    plan = states["Plan"]["Parameters"]["Payload"]
    assert {k.removesuffix(".$") for k in plan} == set(plan_step({}, "x")) and plan["step"] == "plan"
    merge = states["Merge"]["Parameters"]["Payload"]
    assert {k.removesuffix(".$") for k in merge} == set(merge_step({})) and merge["step"] == "merge"  # type: ignore[arg-type]
    batch_input = states["Chunks"]["ItemBatcher"]["BatchInput"]
    batch = chunk_batch({}, [])  # type: ignore[typeddict-item]
    assert set(batch) == {"BatchInput", "Items"} and {k.removesuffix(".$") for k in batch_input} == set(
        batch["BatchInput"])
    chunk = states["Chunks"]["ItemProcessor"]["States"]["Chunk"]
    assert chunk["Parameters"]["Payload.$"] == "$"  # the ItemBatcher's envelope, as it is


def test_the_gpu_worker_scales_on_backlog_per_task_and_protects_busy_tasks(default_app: Synth) -> None:
    gpu = [s for m, s in default_app.model_stacks().items() if "-gpu" in m]
    assert gpu
    for stack in gpu:
        template = default_app.template(stack)
        template.has_resource_properties("AWS::ApplicationAutoScaling::ScalingPolicy", {
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": Match.object_like({
                "TargetValue": 100,
                "CustomizedMetricSpecification": {"Metrics": Match.array_with([
                    Match.object_like({"Id": "visible", "MetricStat": Match.object_like({
                        "Metric": Match.object_like({"MetricName": "ApproximateNumberOfMessagesVisible"})})}),
                    Match.object_like({"Id": "inflight", "MetricStat": Match.object_like({
                        "Metric": Match.object_like({"MetricName": "ApproximateNumberOfMessagesNotVisible"})})}),
                    Match.object_like({"Id": "tasks", "MetricStat": Match.object_like({
                        "Metric": Match.object_like({"MetricName": "RunningTaskCount"})})}),
                    {"Id": "backlogpertask", "Expression": "(visible + inflight) / tasks",
                     "Label": Match.any_value(), "ReturnData": True},
                ])},
            }),
        })
        alarms = json.dumps(_resources(default_app, stack, "AWS::CloudWatch::Alarm"))
        assert "IF(tasks < 1, visible + inflight, 0)" in alarms  # the first task, when none runs
        protection = [s for p in _resources(default_app, stack, "AWS::IAM::Policy").values()
                      for s in p["Properties"]["PolicyDocument"]["Statement"] if s.get("Sid") == "OwnScaleInProtection"]
        assert len(protection) == 1 and sorted(protection[0]["Action"]) == ["ecs:GetTaskProtection",
                                                                              "ecs:UpdateTaskProtection"]


def _catalog() -> Any:
    from functions.contract.catalog import load_catalog

    return load_catalog(REPO / "catalog.toml")
