"""maas infrastructure: a CDK app that deploys every catalog model behind one REST API.

Data flows one way: ``catalog.toml`` + each artifact's ``manifest.json`` → :mod:`infra.config`
(typed, validated, guarded) → stacks. This package never imports ``functions`` or ``model_build``;
it only packages the ``functions/`` folder as a Lambda asset or Docker build context.
"""
