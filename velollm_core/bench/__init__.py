"""The benchmark engine shared by every backend: suites, runs, statistics, result files."""
