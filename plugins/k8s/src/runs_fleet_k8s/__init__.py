"""runs-fleet's Kubernetes mode: runner Jobs, Deployment warm pools, ConfigMap state,
Lease locks and Secret runner configs, over the official ``kubernetes`` client."""
