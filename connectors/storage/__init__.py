"""Storage: where archives live (``s3/``) and how the portal reaches a customer's bucket (``awsrole``)."""
