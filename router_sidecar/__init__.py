"""Laneway router sidecar."""
