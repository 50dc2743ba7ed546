"""The benchmark: a load generator built on the project's SDK, baselines measured in the same run, and a
report (``bench/results/REPORT.md`` + PNG plots). ``python -m bench.run --help`` lists the sizes."""
