"""Adapters: AWS services, payment channels and token verification behind the project's ports."""
