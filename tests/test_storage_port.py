"""
The node's storage port (L{minkms.server.ports.VolumeStorage}): how its
Readys reach C{kms.db}, read back by opening the volume again.
"""

from minkms.raft.ready import FOLLOWER, Ready, SoftState
from minkms.raft.types import HardState
from minkms.server.ports import VolumeStorage
from minkms.storage.volume import InlineRunner, open_volume_now
from tests.test_storage_volume import VolumeTestCase, entry


def ready(entries=(), hard_state=None):
    """A Ready that writes C{entries} and C{hard_state}; fsynced when it has entries."""
    return Ready(
        hard_state=hard_state,
        entries=tuple(entries),
        snapshot=None,
        committed_entries=(),
        messages=(),
        read_states=(),
        must_sync=bool(entries),
        soft_state=SoftState(FOLLOWER, -1, 1),
    )


class HeldCommitTests(VolumeTestCase):
    def reopened(self, volume):
        """Close C{volume} and recover what is on the disk."""
        self.successResultOf(volume.close())
        again = open_volume_now(self.path, self.hsm, runner=InlineRunner())
        self.addCleanup(again.close)
        return again.recovered

    def test_commit_alone_goes_with_the_next_synced_write(self):
        """
        A commit index alone is answered at once and writes nothing; the
        next fsynced Ready writes it after its entries, so that it is on
        the disk with them.
        """
        volume = self.open()
        storage = VolumeStorage(volume)
        self.successResultOf(storage.persist(ready([entry(1)], HardState(1, 0, 0))))
        size = volume.size
        self.successResultOf(storage.persist(ready(hard_state=HardState(1, 0, 1))))
        self.assertEqual(volume.size, size, "nothing was written for a commit index alone")
        self.successResultOf(storage.persist(ready([entry(2)])))
        recovered = self.reopened(volume)
        self.assertEqual(recovered.hard_state, HardState(1, 0, 1))
        self.assertEqual([e.index for e in recovered.entries], [1, 2])

    def test_newer_hard_state_replaces_the_held_one(self):
        """An fsynced Ready with its own hard state writes that one: it is the newer."""
        volume = self.open()
        storage = VolumeStorage(volume)
        self.successResultOf(storage.persist(ready([entry(1)], HardState(1, 0, 0))))
        self.successResultOf(storage.persist(ready(hard_state=HardState(1, 0, 1))))
        self.successResultOf(storage.persist(ready([entry(2, term=2)], HardState(2, 3, 1))))
        self.assertEqual(self.reopened(volume).hard_state, HardState(2, 3, 1))

    def test_held_commit_written_on_demand_once(self):
        """L{VolumeStorage.write_held} writes the held commit index, and nothing when none is held."""
        volume = self.open()
        storage = VolumeStorage(volume)
        self.successResultOf(storage.persist(ready([entry(1)], HardState(1, 0, 0))))
        self.successResultOf(storage.persist(ready(hard_state=HardState(1, 0, 1))))
        storage.write_held()
        size = volume.size
        storage.write_held()
        self.assertEqual(volume.size, size, "nothing held, nothing written")
        self.assertEqual(self.reopened(volume).hard_state, HardState(1, 0, 1))
