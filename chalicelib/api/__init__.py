"""The HTTP edge: request and response models, auth, the error envelope, the OpenAPI document."""
