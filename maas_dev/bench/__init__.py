"""`maas bench`: every figure measured side by side in one run, written to docs/benchmarks/."""
