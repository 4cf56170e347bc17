"""dacstyle.runtimes."""
