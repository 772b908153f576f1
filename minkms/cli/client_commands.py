"""
The client commands of the C{minkms} CLI, gathered from one module per
group (cluster, enclaves, keys, identities, policies).
"""

from minkms.cli import cluster, enclaves, identities, keys, ops, policies

COMMANDS: dict = {
    **cluster.COMMANDS,
    **enclaves.COMMANDS,
    **keys.COMMANDS,
    **identities.COMMANDS,
    **policies.COMMANDS,
    **ops.COMMANDS,
}
