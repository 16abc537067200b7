"""docs/cli.md is generated from the parser: it must be current, and every command documented."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.docs import _walk, markdown
from cli.main import build_parser

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_docs_cli_md_is_current() -> None:
    assert DOC.read_text() == markdown(), "regenerate: python -m cli.docs > docs/cli.md"


def test_every_command_has_a_help_line_and_every_option_a_help_text() -> None:
    for path, parser in _walk(build_parser(), ["getoperate"]):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"{' '.join(path)} {choice.dest}: no help line"
            elif action.option_strings:
                assert action.help, f"{' '.join(path)} {action.option_strings}: no help text"
