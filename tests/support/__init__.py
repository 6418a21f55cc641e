"""Reusable test fixtures with plain APIs: model files, a loopback S3 server, a loopback Hub,
an OTLP/HTTP trace receiver, a Prometheus server, small default steps, a stand-in NVML."""
