"""
Policy patterns, decided in time linear in the name (spec section 8).

A pattern is a glob in which only C{*} is special: it matches any sequence
of characters, including none.  Split at its stars, a pattern is a list of
literal segments; a name matches when it starts with the first, ends with
the last, and holds the ones in between in order, without overlap.  Taking
the leftmost place of each middle segment is always right (a later place
only leaves less room for the rest), so one left-to-right scan decides:
no backtracking, whatever the pattern.  A policy's patterns are compiled
once, when its record is made (L{PolicyMatcher}), and die with it.
"""

from collections.abc import Iterable, Mapping

from minkms.names import MAX_NAME


class Glob:
    """One compiled pattern."""

    __slots__ = ("pattern", "head", "middle", "tail", "starred")

    def __init__(self, pattern: str) -> None:
        segments = pattern.split("*")
        self.pattern = pattern
        self.starred = len(segments) > 1
        self.head = segments[0]
        self.tail = segments[-1] if self.starred else ""
        self.middle = tuple(s for s in segments[1:-1] if s)

    def matches(self, name: str) -> bool:
        """Whether the whole of C{name} matches."""
        if not self.starred:
            return name == self.pattern
        head, tail = self.head, self.tail
        end = len(name) - len(tail)
        if end < len(head) or not name.startswith(head) or not name.endswith(tail):
            return False
        at = len(head)
        for segment in self.middle:
            at = name.find(segment, at, end)
            if at < 0:
                return False
            at += len(segment)
        return True

    def may_match_prefix(self, prefix: str) -> bool:
        """
        Whether some name starting with C{prefix} matches: past the first
        star anything can follow, so only the head constrains a prefix.
        """
        if not self.starred:
            return self.pattern.startswith(prefix)
        return self.head.startswith(prefix) or prefix.startswith(self.head)

    def covers_prefix(self, prefix: str) -> bool:
        """
        Whether every name starting with C{prefix} matches: the pattern
        must end with a star (which absorbs any extension) and match
        C{prefix} itself.
        """
        return self.starred and self.tail == "" and self.matches(prefix)


class PatternSet:
    """
    The patterns of one action, grouped so the common shapes cost one C
    call for the whole group: exact names (a set), C{prefix*} (one
    C{startswith}), C{*suffix} (one C{endswith}); other globs one by one.
    """

    __slots__ = ("exact", "prefixes", "suffixes", "globs", "all")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.all = tuple(Glob(p) for p in patterns)
        exact, prefixes, suffixes, globs = set(), [], [], []
        for glob in self.all:
            if not glob.starred:
                exact.add(glob.pattern)
            elif glob.tail == "" and not glob.middle:
                prefixes.append(glob.head)
            elif glob.head == "" and not glob.middle:
                suffixes.append(glob.tail)
            else:
                globs.append(glob)
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)
        self.suffixes = tuple(suffixes)
        self.globs = tuple(globs)

    def matches(self, name: str) -> bool:
        """Whether any pattern matches C{name}."""
        return (
            name in self.exact
            or name.startswith(self.prefixes)
            or name.endswith(self.suffixes)
            or any(glob.matches(name) for glob in self.globs)
        )


_EMPTY = PatternSet(())


MAX_DECISIONS = 256
"""
Decisions one L{PolicyMatcher} remembers before it starts afresh; only
those about names a key, policy or identity may have (at most
C{MAX_NAME} characters) are remembered, so a policy's memory stays small
whatever its callers ask.
"""


class PolicyMatcher:
    """
    The compiled allow and deny rules of one policy record, and the
    decisions taken with them: a policy record is never changed, only
    replaced, so a decision holds as long as the record does.
    """

    __slots__ = ("allow", "deny", "_decisions")

    def __init__(
        self,
        allow: Mapping[str, Iterable[str]],
        deny: Mapping[str, Iterable[str]],
    ) -> None:
        self.allow = {action: PatternSet(p) for action, p in allow.items()}
        self.deny = {action: PatternSet(p) for action, p in deny.items()}
        self._decisions: dict[tuple[str, str], bool] = {}

    def allows(self, action: str, name: str) -> bool:
        """Deny wins; otherwise some allow pattern must match."""
        decided = self._decisions.get((action, name))
        if decided is None:
            decided = self.decide(action, name)
            if len(name) <= MAX_NAME:
                if len(self._decisions) >= MAX_DECISIONS:
                    self._decisions.clear()
                self._decisions[(action, name)] = decided
        return decided

    def decide(self, action: str, name: str) -> bool:
        """L{allows} without remembering: what a name never asked before costs."""
        return not self.deny.get(action, _EMPTY).matches(name) and self.allow.get(action, _EMPTY).matches(name)

    def allows_listing(self, action: str, prefix: str) -> bool:
        """No deny pattern covers the whole prefix and some allow pattern may match."""
        if any(g.covers_prefix(prefix) for g in self.deny.get(action, _EMPTY).all):
            return False
        return any(g.may_match_prefix(prefix) for g in self.allow.get(action, _EMPTY).all)
