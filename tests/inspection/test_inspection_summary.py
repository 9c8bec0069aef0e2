"""ModelInspector.format_summary: layout, colour switch, source lines, empty summaries."""

from __future__ import annotations

import re

import pytest
import torch
from inspection_helpers import line_of, qualname, shown_path
from torch import nn

from coreai_opt.inspection import ModelInspector, ModuleContext, ModuleInfo, OpInfo
from coreai_opt.inspection._render import render_summary

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x))


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + x


@pytest.fixture(scope="module")
def small() -> ModelInspector:
    return ModelInspector(Small(), (torch.randn(2, 4),), "graph")


def test_plain_summary_layout(small: ModelInspector) -> None:
    path = shown_path(__file__)
    block_line = line_of(Block.forward, "return torch.relu")
    small_line = line_of(Small.forward, "return self.block")
    expected = f"""\
Legend:
  ■ module_name (module_type)
  ◆ op_name [op_type]

({qualname(Small)})
module inputs: x
module outputs: add
├── ■ block ({qualname(Block)})
│   module inputs: x
│   module outputs: relu
│   ├── ■ linear (torch.nn.modules.linear.Linear)
│   │   module inputs: x
│   │   module outputs: linear
│   │   ├── ◆ block_linear_weight [get_attr]
│   │   │   op outputs: linear
│   │   ├── ◆ block_linear_bias [get_attr]
│   │   │   op outputs: linear
│   │   └── ◆ linear [linear]
│   │       op inputs: x, block_linear_weight, block_linear_bias
│   │       op outputs: relu
│   │       filepath: {path}:{block_line}
│   │       code: return torch.relu(self.linear(x))
│   └── ◆ relu [relu]
│       op inputs: linear
│       op outputs: add
│       filepath: {path}:{block_line}
│       code: return torch.relu(self.linear(x))
└── ◆ add [add]
    op inputs: relu, x
    op outputs: output
    filepath: {path}:{small_line}
    code: return self.block(x) + x"""
    assert small.format_summary(colorize=False) == expected


def test_colorize_true_forces_ansi_styles(small: ModelInspector) -> None:
    coloured = small.format_summary(colorize=True)
    assert "\x1b[" in coloured
    assert ANSI.sub("", coloured) == small.format_summary(colorize=False)
    # the boundary and detail lines are dim
    assert "\x1b[2mmodule inputs: x\x1b[0m" in coloured
    assert "\x1b[2mop inputs: relu, x\x1b[0m" in coloured


def test_colorize_false_disables_styles(small: ModelInspector, monkeypatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert "\x1b" not in small.format_summary(colorize=False)


def test_colorize_none_follows_the_terminal(small: ModelInspector, monkeypatch) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    # pytest captures stdout: not a terminal, so no colour
    assert "\x1b" not in small.format_summary()
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert "\x1b[" in small.format_summary()
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b" not in small.format_summary()


def test_boundary_ops_are_not_leaves(small: ModelInspector) -> None:
    text = small.format_summary(colorize=False)
    assert "[placeholder]" not in text and "[output]" not in text


def test_framework_frames_are_skipped() -> None:
    # every frame of the documented example lies in torch: no filepath/code lines
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    text = ModelInspector(model, (torch.randn(1, 10),), "graph").format_summary(colorize=False)
    assert "filepath:" not in text and "code:" not in text
    assert "◆ relu [relu]" in text and "■ 1 (torch.nn.modules.activation.ReLU)" in text


def test_long_lines_are_not_wrapped() -> None:
    class Long(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + x.abs() + x.neg() + x.exp() + x.sin() + x.cos() + x.tanh() + x.sigmoid()

    text = ModelInspector(Long(), (torch.randn(2),), "graph").format_summary(colorize=False)
    code = (
        "code: return x + x.abs() + x.neg() + x.exp() + x.sin() + x.cos() + x.tanh() + x.sigmoid()"
    )
    lines = [line for line in text.splitlines() if line.endswith(code)]
    assert lines and all(len(line) > 90 for line in lines)


def test_multi_output_edges_are_indexed() -> None:
    class Split(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = x.split(2)
            return b - a

    text = ModelInspector(Split(), (torch.randn(4),), "graph").format_summary(colorize=False)
    assert "op inputs: split[1], split" in text
    assert "op outputs: [0] sub; [1] sub" in text


def test_unknown_types_show_a_question_mark() -> None:
    root = ModuleInfo("", None)
    child = ModuleInfo("inner", None)
    root.child_modules["inner"] = child
    op = OpInfo(
        "mystery", None, module_stack=(ModuleContext("", None), ModuleContext("inner", None))
    )
    child.ops.append(op)
    text = render_summary(root, colorize=False, hidden=())
    assert text.splitlines()[4:] == ["(?)", "└── ■ inner (?)", "    └── ◆ mystery [?]"]


def test_nothing_to_show() -> None:
    root = ModuleInfo("", "pkg.M")
    root.ops.append(OpInfo("x", "placeholder"))
    assert render_summary(root, colorize=True, hidden={"x"}) == "(no compressible operations found)"
    assert render_summary(ModuleInfo("", "pkg.M"), None, ()) == "(no compressible operations found)"


def test_colorize_must_be_a_bool_or_none(small: ModelInspector) -> None:
    with pytest.raises(TypeError, match="colorize"):
        small.format_summary(colorize="yes")  # type: ignore[arg-type]
