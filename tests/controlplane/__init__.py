"""The local Kubernetes control plane the integration tests run against (see plane.py)."""
