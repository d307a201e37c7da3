"""The local control plane: real Kubernetes components as processes on loopback."""
