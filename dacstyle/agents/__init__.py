"""dacstyle.agents."""
