"""dacstyle.benchmarks."""
