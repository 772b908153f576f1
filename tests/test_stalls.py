"""
L{minkms.server.stalls}: the warning an operator gets when the node's tick
(and so a leader's heartbeats) ran late.
"""

from twisted.trial import unittest

from minkms.server.stalls import StallWatch


class StallWatchTests(unittest.TestCase):
    def setUp(self):
        self.now = 0.0
        self.warnings: list[str] = []
        self.watch = StallWatch(0.1, lambda: self.now, self.warnings.append, quiet=10.0)

    def ticks(self, *gaps: float) -> None:
        for gap in gaps:
            self.now += gap
            self.watch.tick()

    def test_on_time_and_slightly_late_ticks_are_quiet(self):
        self.ticks(0.0, 0.1, 0.1, 0.15, 0.05, 0.19)
        self.assertEqual(self.warnings, [])

    def test_a_tick_late_by_more_than_an_interval_warns_how_late(self):
        self.ticks(0.0, 0.1, 1.725)
        self.assertEqual(len(self.warnings), 1)
        self.assertIn("tick ran 1625 ms late (ticks every 100 ms)", self.warnings[0])
        self.assertIn("election", self.warnings[0])
        self.assertAlmostEqual(self.watch.longest, 1.625)

    def test_warnings_are_rate_limited_and_count_what_was_held_back(self):
        self.ticks(0.0, 0.5, 0.4, 0.9, 0.3)
        self.assertEqual(len(self.warnings), 1)
        self.ticks(10.0)
        self.assertEqual(len(self.warnings), 2)
        self.assertIn("3 more since the last warning, the longest 800 ms", self.warnings[1])

    def test_a_restart_is_no_stall(self):
        """Ticking stops while a node joins a cluster; the pause is not reported."""
        self.ticks(0.0, 0.1)
        self.watch.restart()
        self.ticks(30.0, 0.1)
        self.assertEqual(self.warnings, [])
