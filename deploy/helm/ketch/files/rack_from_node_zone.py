"""Init container of the Ketch Helm chart: write this pod's node's zone label to a file.

The downward API exposes pod fields, not node labels, so the zone is read from the
Kubernetes API: GET /api/v1/nodes/$NODE_NAME with the pod's service-account token
(the chart's ClusterRole allows `get nodes` and nothing else). The label named by
$ZONE_LABEL (topology.kubernetes.io/zone) goes to $RACK_FILE; the node container
exports it as KETCH_RACK. A node without the label gives an empty file (no rack).
Any failure exits non-zero, so the pod does not start with a wrong rack.
Runs with the image's Python and the standard library only (`python -c`);
$SERVICE_ACCOUNT_DIR (token, ca.crt) defaults to the standard mount.
"""

import json
import os
import ssl
import urllib.request

ACCOUNT = os.environ.get("SERVICE_ACCOUNT_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")

node = os.environ["NODE_NAME"]
label = os.environ.get("ZONE_LABEL", "topology.kubernetes.io/zone")
host = os.environ["KUBERNETES_SERVICE_HOST"]
port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
host = f"[{host}]" if ":" in host else host
with open(f"{ACCOUNT}/token") as f:
    token = f.read().strip()
request = urllib.request.Request(
    f"https://{host}:{port}/api/v1/nodes/{node}", headers={"Authorization": f"Bearer {token}"}
)
context = ssl.create_default_context(cafile=f"{ACCOUNT}/ca.crt")
with urllib.request.urlopen(request, context=context, timeout=10) as response:
    labels = json.load(response)["metadata"].get("labels") or {}
zone = labels.get(label, "")
with open(os.environ.get("RACK_FILE", "/etc/ketch-rack/rack"), "w") as f:
    f.write(zone)
print(f"node {node}: {label}={zone!r}")
