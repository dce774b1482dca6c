"""The local stack: dev and test tooling, never shipped to Lambda."""
