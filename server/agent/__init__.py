"""Agent mode (`mode: "agent"`, `ragkb ask --agent`): plan sub-questions, search with typed tools, review the
draft with the citation-support check, answer; bounded, traced and cached (docs/agent.md)."""

from __future__ import annotations

from .planning import LLMPlanner, Planner, PlanOutput, PlanResult, RulePlanner, SubQuestion
from .runner import AgentEvent, AgentPlan, AgentRunner, Budget, StepEvent
from .tools import ListDocumentsArgs, ReadArgs, SearchArgs, ToolArgumentError, Toolbox, tool_names

__all__ = [
    "AgentEvent",
    "AgentPlan",
    "AgentRunner",
    "Budget",
    "LLMPlanner",
    "ListDocumentsArgs",
    "PlanOutput",
    "PlanResult",
    "Planner",
    "ReadArgs",
    "RulePlanner",
    "SearchArgs",
    "StepEvent",
    "SubQuestion",
    "ToolArgumentError",
    "Toolbox",
    "tool_names",
]
