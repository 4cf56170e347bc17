"""dacstyle.competitions."""
