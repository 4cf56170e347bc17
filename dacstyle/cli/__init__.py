"""dacstyle.cli."""
