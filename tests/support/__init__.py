"""Reusable test fixtures with plain APIs: model files, a loopback S3 server, a loopback Hub."""
