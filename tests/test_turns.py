"""
The per-turn budget of API work (L{minkms.server.turns}): once a turn has
spent it, API connections wait for a later turn, in arrival order, so that
peer traffic is read and written every turn.
"""

from twisted.trial.unittest import SynchronousTestCase

from minkms.server.turns import TurnBudget


class Turns:
    """A reactor reduced to its turns: C{callLater(0, f)} runs in the next one."""

    def __init__(self):
        self.pending = []

    def callLater(self, delay, f, *args):
        self.pending.append((f, args))
        return f

    def advance(self, seconds):
        due, self.pending = self.pending, []
        for f, args in due:
            f(*args)


class TurnBudgetTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = Turns()
        self.now = [0.0]
        self.budget = TurnBudget(self.reactor, seconds=0.02, clock=lambda: self.now[0])

    def test_work_within_the_budget_runs_now(self):
        """Work that fits in the turn's budget is allowed."""
        self.assertTrue(self.budget.allows())
        self.now[0] += 0.019
        self.assertTrue(self.budget.allows())

    def test_spent_budget_postpones_in_order_to_the_next_turn(self):
        """
        Past the budget nothing more runs in this turn; the waiting work runs
        in the next turns, first come first served, each turn within budget.
        """
        self.budget.allows()
        self.now[0] += 0.03
        self.assertFalse(self.budget.allows())
        ran = []

        def work(name):
            def resume():
                ran.append(name)
                self.now[0] += 0.015

            return resume

        for name in "abc":
            self.budget.wait(work(name))
        self.assertEqual(ran, [])
        self.reactor.advance(0)
        self.assertEqual(ran, ["a", "b"])
        self.reactor.advance(0)
        self.assertEqual(ran, ["a", "b", "c"])
        self.assertTrue(self.budget.allows())
