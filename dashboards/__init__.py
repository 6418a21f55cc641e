"""The Grafana dashboards of llm-init, generated as code (see generate.py)."""
