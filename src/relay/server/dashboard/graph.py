"""A workflow run's steps laid out as a graph, for the run page's server-rendered SVG.

Steps are put in columns by their depth in the DAG (the longest chain of dependencies before them), so
that every edge goes left to right, and in each column in the order of the definition. Coordinates are
computed here, not in the browser: the page needs no layout script, and the live updates only change
each step's state (its class and its label), never the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.server.dashboard.render import job_url
from relay.types import JobState, WorkflowRun, WorkflowStep

BOX_WIDTH, BOX_HEIGHT = 176, 52
COLUMN_GAP, ROW_GAP, MARGIN = 64, 20, 12
MAX_LABEL = 22  # characters of a step's name shown in its box (the whole name is its tooltip)


def shown_state(step: WorkflowStep) -> str:
    """What a step's box says: its job's state, ``waiting`` while held for its dependencies, ``gone``
    once its job was pruned."""
    if step.state is None:
        return "gone"
    if step.held and step.state is JobState.PENDING:
        return "waiting"
    return step.state.value


@dataclass(frozen=True, slots=True)
class Node:
    step: WorkflowStep
    state: str
    x: int
    y: int
    label: str
    url: str

    width = BOX_WIDTH
    height = BOX_HEIGHT

    @property
    def text_x(self) -> int:
        return self.x + 12


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    path: str  # the SVG path's d attribute


@dataclass(frozen=True, slots=True)
class Graph:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int


def depths(steps: tuple[WorkflowStep, ...]) -> dict[str, int]:
    """Each step's depth: 0 without dependencies, else one more than its deepest dependency. The graph
    was checked acyclic when the run started; a dependency on an unknown step counts as none."""
    by_name = {s.name: s for s in steps}
    found: dict[str, int] = {}

    def depth(name: str, seen: frozenset[str]) -> int:
        if name not in found:
            parents = [p for p in by_name[name].depends_on if p in by_name and p not in seen]
            found[name] = 1 + max((depth(p, seen | {name}) for p in parents), default=-1)
        return found[name]

    for s in steps:
        depth(s.name, frozenset())
    return found


def layout(run: WorkflowRun) -> Graph:
    levels = depths(run.steps)
    rows: dict[int, int] = {}
    nodes: dict[str, Node] = {}
    for s in run.steps:
        column = levels[s.name]
        row = rows.get(column, 0)
        rows[column] = row + 1
        label = s.name if len(s.name) <= MAX_LABEL else s.name[: MAX_LABEL - 1] + "…"
        x = MARGIN + column * (BOX_WIDTH + COLUMN_GAP)
        y = MARGIN + row * (BOX_HEIGHT + ROW_GAP)
        nodes[s.name] = Node(s, shown_state(s), x, y, label, job_url(s.job_id))
    edges = []
    for s in run.steps:
        for parent in s.depends_on:
            if parent in nodes:
                edges.append(Edge(parent, s.name, _curve(nodes[parent], nodes[s.name])))
    columns = max(levels.values(), default=0) + 1
    height = max(rows.values(), default=1)
    return Graph(
        nodes=list(nodes.values()),
        edges=edges,
        width=2 * MARGIN + columns * BOX_WIDTH + (columns - 1) * COLUMN_GAP,
        height=2 * MARGIN + height * BOX_HEIGHT + (height - 1) * ROW_GAP,
    )


def _curve(source: Node, target: Node) -> str:
    """From the middle of the source's right side to the middle of the target's left side."""
    x1, y1 = source.x + BOX_WIDTH, source.y + BOX_HEIGHT // 2
    x2, y2 = target.x, target.y + BOX_HEIGHT // 2
    bend = (x2 - x1) // 2
    return f"M {x1} {y1} C {x1 + bend} {y1}, {x2 - bend} {y2}, {x2} {y2}"
