"""GIVEN the default catalog WHEN the app is synthesized THEN one shared stack, one stack per model and
the API stage stack come out, every model on its catalog target, with nothing reaching the network."""

from __future__ import annotations

from typing import Any

from tests.infra.conftest import ACCOUNT, REGION, STAGE, Synth, function_handler


def test_one_shared_stack_one_stack_per_model_and_the_api_stage(
    default_app: Synth, catalog: dict[str, dict[str, Any]]
) -> None:
    assert default_app.error is None, default_app.error
    expected = {f"maas-{STAGE}-shared", f"maas-{STAGE}-api"} | {f"maas-{STAGE}-model-{name}" for name in catalog}
    assert set(default_app.stacks) == expected
    assert set(default_app.model_stacks()) == set(catalog)


def test_default_catalog_has_both_targets(catalog: dict[str, dict[str, Any]]) -> None:
    targets = {entry["deploy"]["target"] for entry in catalog.values()}
    assert {"lambda", "gpu"} <= targets


def test_stacks_have_the_configured_environment_and_tags(default_app: Synth) -> None:
    for stack in default_app.stacks.values():
        assert stack.account == ACCOUNT
        assert stack.region == REGION
        for resource in default_app.json(stack.stack_name)["Resources"].values():
            tags = resource["Properties"].get("Tags") if "Properties" in resource else None
            if isinstance(tags, list) and tags and "Key" in tags[0]:
                assert {"Key": "project", "Value": "maas"} in [{k: t[k] for k in ("Key", "Value")} for t in tags]


def test_each_model_stack_uses_its_catalog_target(default_app: Synth, catalog: dict[str, dict[str, Any]]) -> None:
    for name, stack_name in default_app.model_stacks().items():
        template = default_app.template(stack_name)
        functions = [
            f
            for f in template.find_resources("AWS::Lambda::Function").values()
            if function_handler(f["Properties"]) == "functions.handlers.http.handler"
        ]
        services = template.find_resources("AWS::ECS::Service")
        if catalog[name]["deploy"]["target"] == "lambda":
            assert len(functions) == 1 and not services, name
        else:
            assert not functions and len(services) == 2, name  # HTTP service + queue worker


def test_api_stage_deploys_after_every_model_stack(default_app: Synth) -> None:
    api = default_app.stacks[f"maas-{STAGE}-api"]
    dependencies = {stack.stack_name for stack in api.dependencies}
    assert set(default_app.model_stacks().values()) <= dependencies


def test_variant_catalog_synthesizes_any_number_of_models(variant_app: Synth) -> None:
    assert variant_app.error is None, variant_app.error
    assert set(variant_app.model_stacks()) == {"big-classifier", "s3-embedder", "other-embedder", "generator-gpu"}
