"""Errors that cross a process boundary (Ray) keep what a user reads from them."""

import pickle

from plait.errors import NodeExecutionError


def test_node_error_keeps_the_users_exception_as_its_cause_after_pickling():
    cause = ValueError("boom in the user's leaf")
    error = NodeExecutionError(
        node_id="extract", module_path="extract", module_type="Extract", alias=None,
        source="pipeline.py:12", cause=cause,
    )

    rebuilt = pickle.loads(pickle.dumps(error))

    assert isinstance(rebuilt.__cause__, ValueError)
    assert str(rebuilt.__cause__) == "boom in the user's leaf"
    assert rebuilt.cause is rebuilt.__cause__
    assert str(rebuilt) == str(error)
