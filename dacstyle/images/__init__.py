"""dacstyle.images."""
