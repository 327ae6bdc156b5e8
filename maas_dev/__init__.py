"""Developer tools around maas: the CLI, the local AWS harness, the dev server, the demo, benchmarks and
report generators. Nothing here is deployed: a Lambda bundle or GPU image carries `functions/` only."""
