"""Validating a submitted prompt before it is queued, with ComfyUI's error bodies.

Order of work, as ComfyUI does it: every node must name a known `class_type` (else
`invalid_prompt`); the output nodes (optionally narrowed by `partial_execution_targets`) must not
be empty (else `prompt_no_outputs`); then each output is checked together with everything it
links to. An output is good when neither it nor anything upstream has an error. If at least one
output is good the prompt is accepted and only the good outputs run; the rest are reported in
`node_errors`. Beyond ComfyUI: a dependency cycle is reported on the nodes that form it, a bad
link on the node that holds it, and the prompt itself must be a JSON object.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from comfyserve.engine.registry import NodeRegistry
from comfyserve.engine.validate_inputs import Link, NodeCheck, NodeChecker, error


@dataclass
class ValidationResult:
    ok: bool  # True → queue it (possibly with some outputs failed)
    error: dict | None  # ComfyUI's {"type","message","details","extra_info"} when not ok
    node_errors: dict  # {node_id: {"errors": [...], "dependent_outputs": [...], "class_type": ...}}
    outputs_to_execute: list[str]  # the good output node ids, in prompt order


def validate_prompt(
    prompt: dict, registry: NodeRegistry, partial_execution_targets: list[str] | None = None
) -> ValidationResult:
    """Check `prompt` (converting widget values in place) and say which outputs may run."""
    problem = prompt_shape_error(prompt, registry)
    if problem is not None:
        return _rejected(problem)
    outputs = output_node_ids(prompt, registry)
    if partial_execution_targets is not None:
        targets = set(partial_execution_targets)
        outputs = [node_id for node_id in outputs if node_id in targets]
    if not outputs:
        return _rejected(error("prompt_no_outputs", "Prompt has no outputs", ""))

    checker = NodeChecker(prompt, _class_lookup(registry))
    graph = _DependencyGraph(checker)
    components = graph.components_from(outputs)
    valid = _mark_valid(components, graph.checks)
    good = [node_id for node_id in outputs if valid[node_id]]
    failed = [node_id for node_id in outputs if not valid[node_id]]
    node_errors = _node_errors(prompt, components, graph.checks, failed)
    if good:
        return ValidationResult(True, None, node_errors, good)
    summary = "\n".join(f"{e['message']}: {e['details']}" for o in failed for e in graph.checks[o].errors)
    return ValidationResult(
        False, error("prompt_outputs_failed_validation", "Prompt outputs failed validation", summary), node_errors, []
    )


def prompt_shape_error(prompt: Any, registry: NodeRegistry) -> dict[str, Any] | None:
    """The first structural problem of the prompt (ComfyUI's `invalid_prompt`), or None."""
    if not isinstance(prompt, dict):
        return error(
            "invalid_prompt",
            "Invalid prompt",
            f"'prompt' must be a JSON object mapping node ids to nodes, got {_json_type(prompt)}.",
        )
    for node_id, node in prompt.items():
        where = f"Node ID '#{node_id}'"
        if not isinstance(node, dict) or "class_type" not in node:
            return error("invalid_prompt", "Cannot execute because a node is missing the class_type property.", where)
        class_type = node["class_type"]
        if not isinstance(class_type, str) or registry.get(class_type) is None:
            return error("invalid_prompt", f"Cannot execute because node {class_type} does not exist.", where)
        if not isinstance(node.get("inputs", {}), dict):
            return error(
                "invalid_prompt",
                f"Cannot execute because the inputs of node {class_type} are not a JSON object.",
                where,
            )
    return None


def output_node_ids(prompt: dict, registry: NodeRegistry) -> list[str]:
    """Ids of the prompt's output nodes (classes with OUTPUT_NODE), in prompt order."""
    found = []
    for node_id, node in prompt.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        cls = registry.get(class_type) if isinstance(class_type, str) else None
        if cls is not None and getattr(cls, "OUTPUT_NODE", False):
            found.append(node_id)
    return found


def _rejected(problem: dict[str, Any]) -> ValidationResult:
    return ValidationResult(False, problem, {}, [])


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _class_lookup(registry: NodeRegistry) -> Callable[[str], type]:
    def lookup(class_type: str) -> type:
        cls = registry.get(class_type)
        if cls is None:
            raise KeyError(f"node class {class_type} is not registered")
        return cls

    return lookup


class _DependencyGraph:
    """The nodes the outputs depend on, checked lazily, grouped into strongly connected components."""

    def __init__(self, checker: NodeChecker) -> None:
        self.checker = checker
        self.checks: dict[str, NodeCheck] = {}

    def check(self, node_id: str) -> NodeCheck:
        found = self.checks.get(node_id)
        if found is None:
            found = self.checks[node_id] = self.checker.check(node_id)
        return found

    def sources(self, node_id: str) -> Iterable[str]:
        return [link.source for link in self.check(node_id).links]

    def components_from(self, roots: list[str]) -> list[list[str]]:
        """Strongly connected components reachable from `roots`, each after everything it depends
        on (Tarjan's algorithm, iterative so long chains do not hit the recursion limit)."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        components: list[list[str]] = []

        def visit(node_id: str) -> None:
            index[node_id] = low[node_id] = len(index)
            stack.append(node_id)
            on_stack.add(node_id)

        for root in roots:
            if root in index:
                continue
            visit(root)
            work = [(root, iter(self.sources(root)))]
            while work:
                node_id, pending = work[-1]
                for source in pending:
                    if source not in index:
                        visit(source)
                        work.append((source, iter(self.sources(source))))
                        break
                    if source in on_stack:
                        low[node_id] = min(low[node_id], index[source])
                else:
                    work.pop()
                    if work:
                        parent = work[-1][0]
                        low[parent] = min(low[parent], low[node_id])
                    if low[node_id] == index[node_id]:
                        component = []
                        while True:
                            member = stack.pop()
                            on_stack.discard(member)
                            component.append(member)
                            if member == node_id:
                                break
                        components.append(component[::-1])
        return components


def _mark_valid(components: list[list[str]], checks: dict[str, NodeCheck]) -> dict[str, bool]:
    """A node is valid when it has no errors, is not in a cycle and all its sources are valid.
    Nodes in a cycle get a `dependency_cycle` error for each link that closes the loop."""
    valid: dict[str, bool] = {}
    for component in components:
        members = set(component)
        cyclic = len(component) > 1 or any(link.source in members for link in checks[component[0]].links)
        if cyclic:
            for node_id in component:
                checks[node_id].errors.extend(_cycle_errors(node_id, members, checks))
                valid[node_id] = False
            continue
        node_id = component[0]
        check = checks[node_id]
        valid[node_id] = not check.errors and all(valid[link.source] for link in check.links)
    return valid


def _cycle_errors(node_id: str, members: set[str], checks: dict[str, NodeCheck]) -> list[dict[str, Any]]:
    found = []
    for link in checks[node_id].links:
        if link.source not in members:
            continue
        flow = _cycle_flow(node_id, link.source, members, checks)
        if link.source == node_id:
            message = f"Input '{link.input_name}' links to an output of its own node '{node_id}'"
        else:
            message = (
                f"Input '{link.input_name}' links to node '{link.source}', which depends on node "
                f"'{node_id}' in turn: {' -> '.join(flow)}"
            )
        found.append(
            error(
                "dependency_cycle",
                message,
                link.input_name,
                input_name=link.input_name,
                input_config=link.spec.config() if link.spec is not None else None,
                linked_node=[link.source, link.index],
                cycle=flow,
            )
        )
    return found


def _cycle_flow(node_id: str, source: str, members: set[str], checks: dict[str, NodeCheck]) -> list[str]:
    """The loop through the link `source` → `node_id`, in the direction data flows, starting and
    ending at `node_id` (the shortest such loop within the component)."""
    came_from: dict[str, str | None] = {source: None}
    queue = deque([source])
    while queue:
        current = queue.popleft()
        if current == node_id:
            break
        for link in checks[current].links:
            if link.source in members and link.source not in came_from:
                came_from[link.source] = current
                queue.append(link.source)
    path = [node_id]  # walking back from node_id to source follows the data flow
    step = came_from[node_id] if node_id != source else None
    while step is not None:
        path.append(step)
        step = came_from[step]
    path.append(node_id)
    return path


def _node_errors(
    prompt: dict[str, dict[str, Any]],
    components: list[list[str]],
    checks: dict[str, NodeCheck],
    failed_outputs: list[str],
) -> dict[str, dict[str, Any]]:
    """ComfyUI's `node_errors`: each node with errors of its own, with the failed outputs that
    depend on it. Nodes that fail only because of something upstream are not listed."""
    if not failed_outputs:
        return {}
    dependents: dict[str, list[str]] = {}
    for output in failed_outputs:
        for node_id in _upstream(output, checks):
            dependents.setdefault(node_id, []).append(output)
    node_errors: dict[str, dict[str, Any]] = {}
    for component in components:
        for node_id in component:
            if checks[node_id].errors and node_id in dependents:
                node_errors[node_id] = {
                    "errors": checks[node_id].errors,
                    "dependent_outputs": dependents[node_id],
                    "class_type": prompt[node_id]["class_type"],
                }
    return node_errors


def _upstream(output: str, checks: dict[str, NodeCheck]) -> set[str]:
    """`output` and every node it depends on."""
    seen = {output}
    todo = [output]
    while todo:
        links: list[Link] = checks[todo.pop()].links
        for link in links:
            if link.source not in seen:
                seen.add(link.source)
                todo.append(link.source)
    return seen
