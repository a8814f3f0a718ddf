"""A fake Kubernetes API server for the Kubernetes-mode tests.

It serves the REST paths runs-fleet's adapters use, as the official ``kubernetes`` client
expects them, validates every body it receives against the Kubernetes OpenAPI schemas
(strict), and simulates the controllers a cluster would run (Job, Deployment, garbage
collector, a kubelet stand-in), so adapters are tested against Kubernetes behaviour
rather than against mocks of themselves.

Use the ``kube_api`` fixture (:mod:`tests.kube_api.fixtures`)::

    def test_something(kube_api):
        caller = KubeCaller(kube_api.api_client(), namespace="runs-fleet", ...)
        ...
        kube_api.server.set_pod_phase("runs-fleet", pod_name, "Succeeded")
        assert kube_api.server.invalid_bodies == []
        assert kube_api.server.request_count("create", "jobs") == 1

What the server serves: core/v1 configmaps, secrets, pods (+status), serviceaccounts
(+token), namespaces; batch/v1 jobs (+status); apps/v1 deployments (+status, +scale);
networking.k8s.io/v1 networkpolicies; coordination.k8s.io/v1 leases;
scheduling.k8s.io/v1 priorityclasses; authentication.k8s.io/v1 tokenreviews. Namespaces
need not exist; ``default`` and ``runs-fleet`` do, each with a ``default`` service
account.

Known simplifications, each chosen because runs-fleet does not depend on the difference:
deletions take effect at once (no graceful termination; finalizers are honoured); lists
continue on current data rather than on a snapshot; Deployments own their pods directly
(no ReplicaSets) and replace all pods when the template changes; the Job controller
replaces a failed pod without back-off; server-side apply merges without tracking field
managers; there is no scheduler (pods stay ``Pending`` until the test moves them).
"""
