"""Will TensorRT parse this ONNX graph? Checked here, without TensorRT.

Checks every node (also inside If/Loop/Scan bodies) against TensorRT's supported ONNX operator
table kept in ``data/tensorrt_onnx_ops.json`` (with its TensorRT version and source), the
opset range, the "must be a build-time constant" input restrictions, operators whose output
shape depends on tensor values, and that every shape tensor (Reshape/Expand shapes, Slice
bounds, ...) follows from input *shapes* and constants only, never from input values: then
every shape is fixed once TensorRT's optimisation profile fixes the input shapes.

(ONNX's own shape inference is not used for this: it cannot follow the exporter's
Equal/Where shape arithmetic that TensorRT evaluates without trouble.)
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import onnx

__all__ = ["OP_TABLE_PATH", "CoverageReport", "load_op_table", "check_tensorrt_coverage", "graph_ops"]

OP_TABLE_PATH = Path(__file__).resolve().parent / "data" / "tensorrt_onnx_ops.json"


@lru_cache(maxsize=1)
def load_op_table(path: Path = OP_TABLE_PATH) -> dict[str, Any]:
    """The operator table: ``tensorrt_version``, ``opset_min/max``, ``source``, ``operators``."""
    return json.loads(Path(path).read_text())


@dataclass
class CoverageReport:
    """Outcome of :func:`check_tensorrt_coverage`; ``ok`` iff no problem was found."""

    tensorrt_version: str
    opset: int
    op_counts: Counter = field(default_factory=Counter)
    unsupported: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unsupported and not self.problems

    def summary(self) -> str:
        head = (f"TensorRT {self.tensorrt_version} op coverage, opset {self.opset}, "
                f"{sum(self.op_counts.values())} nodes of {len(self.op_counts)} op types: ")
        if self.ok:
            return head + "all supported"
        return head + "; ".join([f"unsupported ops {self.unsupported}"] * bool(self.unsupported)
                                + self.problems)


def _walk(graph: onnx.GraphProto):
    """Every node of ``graph`` and of its subgraphs, with the graph it lives in."""
    for node in graph.node:
        yield node, graph
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _walk(g)


def graph_ops(model: onnx.ModelProto) -> Counter:
    """``Counter`` of op types, domain-qualified (``"com.microsoft:Foo"``) outside the default domain."""
    return Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}"
                   for n, _ in _walk(model.graph))


def _constant_names(model: onnx.ModelProto) -> set[str]:
    names = {init.name for init in model.graph.initializer}
    for node, graph in _walk(model.graph):
        if node.op_type == "Constant":
            names.update(node.output)
        names.update(i.name for i in graph.initializer)
    return names


# inputs that TensorRT treats as shape tensors: they must follow from shapes and constants only
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "ConstantOfShape": (0,), "Tile": (1,), "Slice": (1, 2, 3, 4),
    "Range": (0, 1, 2), "Resize": (2, 3), "Upsample": (1,), "Pad": (1,), "TopK": (1,),
    "OneHot": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,), "CumSum": (1,),
}


def _data_dependent_shapes(model: onnx.ModelProto) -> list[str]:
    """Shape-tensor inputs (Reshape shape, Expand shape, Slice bounds, ...) that depend on the
    *values* of a graph input, not only on input shapes and constants.

    A tensor is shape-only when it is an initializer, a Constant output, the output of
    Shape/Size, or computed from shape-only tensors. This is a static provenance walk over the
    main graph (the exported graphs have no control flow)."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    constants = {i.name for i in graph.initializer}
    inputs = {i.name for i in graph.input} - constants
    memo: dict[str, str | None] = {}

    def culprit(name: str) -> str | None:
        """The graph input whose values ``name`` depends on, or None if shape-only."""
        if name in memo:
            return memo[name]
        memo[name] = None                     # cycles cannot occur in a valid graph
        if name in constants or not name:
            result = None
        elif name in inputs:
            result = name
        else:
            node = producer.get(name)
            if node is None or node.op_type in ("Constant", "Shape", "Size"):
                result = None
            else:
                result = next((c for c in map(culprit, node.input) if c), None)
        memo[name] = result
        return result

    problems = []
    for node in graph.node:
        for idx in SHAPE_INPUTS.get(node.op_type, ()):
            if idx < len(node.input) and node.input[idx]:
                source = culprit(node.input[idx])
                if source:
                    problems.append(f"{node.op_type} node {node.name!r}: shape input {idx} depends on "
                                    f"the values of graph input {source!r}")
    return problems


def check_tensorrt_coverage(model_or_path: onnx.ModelProto | str | Path,
                            table: dict[str, Any] | None = None) -> CoverageReport:
    """Check an ONNX model (path or proto; external data is not loaded) for TensorRT."""
    if isinstance(model_or_path, onnx.ModelProto):
        model = model_or_path
    else:
        model = onnx.load(str(model_or_path), load_external_data=False)
    table = table or load_op_table()
    ops = table["operators"]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    report = CoverageReport(table["tensorrt_version"], opset, graph_ops(model))
    if not table["opset_min"] <= opset <= table["opset_max"]:
        report.problems.append(f"opset {opset} outside TensorRT {table['tensorrt_version']}'s "
                               f"range {table['opset_min']}..{table['opset_max']}")
    report.unsupported = sorted(op for op in report.op_counts
                                if op not in ops or not ops[op]["supported"])
    data_dependent = set(table["data_dependent_shape_ops"]["ops"])
    constant_inputs = {k: v for k, v in table["constant_inputs"].items() if not k.startswith("_")}
    constants = _constant_names(model)
    for node, _ in _walk(model.graph):
        if node.op_type in data_dependent:
            report.problems.append(f"{node.op_type} node {node.name!r} has a data-dependent "
                                   "output shape")
        for idx in constant_inputs.get(node.op_type, []):
            if idx < len(node.input) and node.input[idx] and node.input[idx] not in constants:
                report.problems.append(f"{node.op_type} node {node.name!r}: input {idx} "
                                       f"({node.input[idx]!r}) must be a build-time constant")
        if node.op_type == "LayerNormalization" and len([o for o in node.output if o]) > 1:
            report.problems.append(f"LayerNormalization node {node.name!r} uses outputs other than Y")
    report.problems.extend(_data_dependent_shapes(model))
    return report
