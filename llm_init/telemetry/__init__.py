"""Tracing, metrics, logging and redaction: observers of the dispatch seam."""
