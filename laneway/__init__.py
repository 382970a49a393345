"""The `laneway` command: one entry point for the compiler, sidecar, operator and tools."""

__version__ = "0.1.0"
