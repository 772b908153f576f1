"""The start-up banner, field for field as in the cluster deployment guide."""

from minkms import version


def banner(hsm_name: str, cluster_id: str, nodes: dict, self_id: int, endpoint: str, api_key: str | None) -> str:
    """
    The lines a node prints once it serves: version, HSM, cluster ID, the
    node list with an arrow at this node, endpoint and SysAdmin API key.
    """
    lines = [
        f"Version     {version.VERSION}",
        f"HSM         {hsm_name}",
        f"Cluster ID  {cluster_id}",
    ]
    for node_id in sorted(nodes):
        arrow = " <-" if node_id == self_id else ""
        lines.append(f"            Node {node_id}: {nodes[node_id]}{arrow}")
    lines.append(f"Endpoint    {endpoint}")
    if api_key:
        lines.append(f"API Key     {api_key}")
    lines.append("=> Server is up and running...")
    return "\n".join(lines)
