"""Will TensorRT parse this ONNX graph? Checked here, without TensorRT.

Checks every node (also inside If/Loop/Scan bodies) against TensorRT's supported ONNX operator
table kept in ``data/tensorrt_onnx_ops.json`` (with its TensorRT version and source), the
opset range, the "must be a build-time constant" input restrictions, operators whose output
shape depends on tensor values, and that every graph output's shape is known from the input
shapes alone (symbolic shape inference), which is what TensorRT's optimisation profiles need.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import onnx
from onnx import shape_inference

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


def _output_shape_problems(model: onnx.ModelProto) -> list[str]:
    """Graph outputs whose dims are neither fixed nor named after an input's symbolic dim."""
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    input_syms = {d.dim_param for i in inferred.graph.input
                  for d in i.type.tensor_type.shape.dim if d.dim_param}
    problems = []
    for out in inferred.graph.output:
        tt = out.type.tensor_type
        if not tt.HasField("shape"):
            problems.append(f"output {out.name!r} has unknown rank")
            continue
        for axis, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                continue
            if d.dim_param and d.dim_param in input_syms:
                continue
            problems.append(f"output {out.name!r} axis {axis} ({d.dim_param or '?'}) is not "
                            "determined by the input shapes")
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
    report.problems.extend(_output_shape_problems(model))
    return report
