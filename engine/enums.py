"""The three string enums of the records: what an agent is doing, what it did, where it ran.

Members compare equal to their values (``ActionType.CODE_EDIT == "code_edit"``), as in the system we
replace; the records store the values on the wire.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["ActionType", "AgentState", "Environment"]


class AgentState(str, Enum):
    """What the agent is doing."""

    IDLE = "idle"
    ANALYZING = "analyzing"
    PLANNING = "planning"
    EXECUTING = "executing"
    TRAINING = "training"
    ERROR = "error"
    OPTIMIZING = "optimizing"


class ActionType(str, Enum):
    """The kinds of action an agent records for RL training."""

    CODE_ANALYSIS = "code_analysis"
    CODE_EDIT = "code_edit"
    FILE_SEARCH = "file_search"
    TEST_EXECUTION = "test_execution"
    PATCH_GENERATION = "patch_generation"
    OPTIMIZATION = "optimization"
    VERIFICATION = "verification"
    CONTEXT_BUILDING = "context_building"
    TOOL_SELECTION = "tool_selection"


class Environment(str, Enum):
    """The deployment environment a record was produced in."""

    DEVELOPMENT = "development"
    TESTING = "testing"
    STAGING = "staging"
    PRODUCTION = "production"
    LOCAL = "local"
