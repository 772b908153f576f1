"""
The server's ports for the Raft driver (L{minkms.driver.loop}): the sealed
volume, the KMS state machine and the peer links.  The simulator has its
own ports (L{minkms.sim.node}); the driver between them is the same.
"""

from twisted.internet import defer
from twisted.logger import Logger

from minkms.raft import codec
from minkms.raft.ready import Ready
from minkms.raft.types import ENTRY_NORMAL, HardState, Snapshot
from minkms.server import peer

log = Logger()


class VolumeStorage:
    """
    Persists Readys into C{kms.db}.

    A Ready that needs no fsync carries only a new commit index, and the
    driver goes on at once.  The commit index is held here and written
    with the next Ready that is fsynced, or by L{write_held} (each tick,
    and when the node stops): writing it at once cost every node a trip
    to the storage thread per write.  A crash may lose it, which Raft
    allows: a restarted node applies less until it hears from a leader.
    """

    def __init__(self, volume) -> None:
        self.volume = volume
        self._held: HardState | None = None

    def persist(self, ready: Ready) -> defer.Deferred:
        if not ready.must_sync:
            if ready.hard_state is not None:
                self._held = ready.hard_state
            return defer.succeed(None)
        records: list = []
        if ready.snapshot is not None:
            records.append(ready.snapshot)
        records.extend(ready.entries)
        hard_state = ready.hard_state if ready.hard_state is not None else self._held
        self._held = None
        if hard_state is not None:
            records.append(hard_state)
        return self.volume.append(records)

    def write_held(self) -> None:
        """Write the commit index held since the last fsynced Ready, if any (not fsynced)."""
        held, self._held = self._held, None
        if held is not None:
            self.volume.append([held], sync=False).addErrback(lambda f: None)

    def save_snapshot(self, snapshot: Snapshot) -> defer.Deferred:
        return self.volume.append([snapshot])


class KMSMachine:
    """
    The KMS state machine as the driver applies it.  Snapshots come from
    C{dump_state} (L{Node.dump_state}), which serializes a copy taken at
    the call a slice per reactor turn: a large state takes seconds.
    """

    def __init__(self, state, dump_state) -> None:
        self.state = state
        self._dump_state = dump_state

    def apply(self, entry):
        if entry.kind == ENTRY_NORMAL:
            return self.state.apply(entry.data)
        return None

    def restore(self, snapshot: Snapshot) -> None:
        self.state.restore(snapshot.data)
        log.info(
            "installed a snapshot from the leader at index {index} ({size} bytes)",
            index=snapshot.meta.index,
            size=len(snapshot.data),
        )

    def dump(self) -> defer.Deferred:
        return self._dump_state()


class PeerLinks:
    """
    The transport port: one kept-up link per other member, and, for a node
    that has no membership yet (joining), the connection a peer's last
    message came on.
    """

    def __init__(self, make_link, sends) -> None:
        self._make_link = make_link
        self._sends = sends
        self.links: dict[int, peer.PeerLink] = {}
        self.inbound: dict = {}
        self.config = None
        self.stopped = False

    def send(self, message) -> None:
        data = codec.encode(message)
        link = self.links.get(message.dst)
        if link is not None and link.send(data):
            return
        inbound = self.inbound.get(message.dst)
        if inbound is not None and inbound.transport is not None and inbound.transport.connected:
            inbound.send_raft(data)

    def flush(self) -> None:
        """Send now what was written to the node's connections so far this turn (L{minkms.server.prompttls})."""
        self._sends.flush()

    def heard_from(self, node_id: int, via) -> None:
        """A message from C{node_id} came over connection C{via}."""
        self.inbound[node_id] = via

    def update(self, config, self_id: int) -> None:
        """Open and close links so there is one per other member of C{config}."""
        if self.stopped:
            return
        self.config = config
        wanted = {i: a for i, a in config.addresses.items() if i in config.members and i != self_id}
        for node_id in list(self.links):
            if wanted.get(node_id) != self.links[node_id].address:
                self.links.pop(node_id).close()
        for node_id, address in wanted.items():
            if node_id not in self.links:
                self.links[node_id] = self._make_link(address)

    def close_all(self) -> None:
        """Drop every link (the node stops, or leaves its cluster)."""
        for link in self.links.values():
            link.close()
        self.links.clear()
