"""Errors users see. Each names the session (when there is one) and says what to do."""

from __future__ import annotations


class MmlakeError(Exception):
    """Base class for every error mmlake raises on purpose."""


class LakeError(MmlakeError):
    """The lake (DuckDB file or object folder) cannot do what was asked."""


class SessionError(MmlakeError):
    """A session's manifest or data cannot be used. Carries the session so messages name it."""

    def __init__(self, session: str, problem: str):
        self.session = session
        self.problem = problem
        super().__init__(f"session {session}: {problem}")
