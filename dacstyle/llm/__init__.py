"""dacstyle.llm."""
