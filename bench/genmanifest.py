"""Generated federation manifests of any size, for benches and scale tests.

The shape of issue #11: ``clusters`` clusters (one tenth of them on-prem, tier 1), two
services per cluster, 5 routes per service, each service placed in about 20 clusters
(or all of them, when there are fewer). With ``endpoints=N`` every service lists N
static endpoint addresses in each of its clusters (80,000 addresses at 1,000 clusters
with N=2); without it only the on-prem clusters (no Kubernetes discovery) list one.

    python bench/genmanifest.py 1000 > fed-1000.yaml
    python bench/genmanifest.py 1000 --endpoints 2 -o fed-1000-ep.yaml

``generate(clusters, ...)`` returns the YAML text (``bench/scale.py`` imports it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CLOUDS = ("aws", "gcp", "azure")
SERVICES_PER_CLUSTER = 2
ROUTES_PER_SERVICE = 5
CLUSTERS_PER_SERVICE = 20


def cluster_name(i: int) -> str:
    cloud = "onprem" if i % 10 == 9 else CLOUDS[i % len(CLOUDS)]
    return f"{cloud}-r{i:04d}"


def service_name(j: int) -> str:
    return f"svc-{j:05d}"


def service_clusters(j: int, clusters: int, per_service: int = CLUSTERS_PER_SERVICE) -> list[int]:
    """The clusters of service ``j``: a contiguous run (mod n) spread by a stride."""
    n = min(per_service, clusters)
    start = (j * 7) % clusters
    return sorted({(start + k * max(1, clusters // n)) % clusters for k in range(n)})


def _cluster(i: int) -> str:
    name = cluster_name(i)
    cloud = name.split("-")[0]
    tier = 1 if cloud == "onprem" else 0
    return (
        f"  - name: {name}\n"
        f"    region: r{i:04d}\n"
        f"    cloud: {cloud}\n"
        f"    tier: {tier}\n"
        f"    gateway:\n"
        f"      eastWest: https://gw.{name}.example.net:15443\n"
        + ("" if tier else "    kubernetes:\n      namespaces: [apps]\n")
        + f"    labels: {{zone: z{i % 8}}}\n"
    )


def _service(j: int, clusters: int, endpoints: int) -> str:
    name = service_name(j)
    host = f"{name}.example.com"
    lines = [f"  - name: {name}", "    routes:", f"      - host: {host}"]
    for r in range(1, ROUTES_PER_SERVICE - 1):
        lines.append(f"      - host: {host}\n        pathPrefix: /p{r}")
    lines.append(f"      - host: '*.{host}'")
    member = service_clusters(j, clusters)
    lines.append("    port: 8080")
    lines.append("    clusters: [" + ", ".join(cluster_name(i) for i in member) + "]")
    onprem = [i for i in member if cluster_name(i).startswith("onprem")]
    listed = member if endpoints else onprem
    if listed:
        lines.append("    endpoints:")
        for i in listed:
            addrs = ", ".join(
                f"'10.{i // 256 % 256}.{i % 256}.{(j * endpoints + k) % 250 + 1}:8080'"
                for k in range(max(1, endpoints))
            )
            lines.append(f"      {cluster_name(i)}: [{addrs}]")
    lines.append("    healthCheck: {path: /healthz, interval: 2s, timeout: 500ms}")
    lines.append("    failover: {policy: healthiest, failbackWindow: 30s}")
    lines.append("    retries: {attempts: 2, perTryTimeout: 2s}")
    return "\n".join(lines) + "\n"


def generate(clusters: int, *, endpoints: int = 0, name: str | None = None) -> str:
    """A valid manifest of ``clusters`` clusters and 2 services per cluster, as YAML text."""
    if clusters < 1:
        raise ValueError("clusters must be >= 1")
    parts = [
        "apiVersion: fedgate/v1\n",
        "kind: Federation\n",
        f"metadata: {{name: {name or f'gen-{clusters}'}}}\n",
        "clusters:\n",
    ]
    parts.extend(_cluster(i) for i in range(clusters))
    parts.append("services:\n")
    parts.extend(_service(j, clusters, endpoints) for j in range(clusters * SERVICES_PER_CLUSTER))
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clusters", type=int, help="number of clusters (e.g. 10, 100, 1000)")
    parser.add_argument("--endpoints", type=int, default=0, help="static addresses per cluster")
    parser.add_argument("--name", help="federation name (default gen-N)")
    parser.add_argument("-o", "--output", help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    text = generate(args.clusters, endpoints=args.endpoints, name=args.name)
    if args.output:
        Path(args.output).write_text(text)
        print(f"{args.output}: {len(text):,} bytes", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
