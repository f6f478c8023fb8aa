"""Every verb and sub-command of the CLI renders its help (argparse formats help lazily)."""

from __future__ import annotations

import argparse

import pytest

from nasq.cli.main import build_parser, main


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.extend(_commands(sub, prefix + (name,)))
    return found


COMMANDS = _commands(build_parser())


def test_all_verbs_are_listed():
    verbs = {c[0] for c in COMMANDS if c}
    assert {"demo", "search", "resume", "report", "train", "export", "latency"} <= verbs
    assert {("search", "nb201"), ("search", "jasq"), ("search", "quant-policy")} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "nasq")
def test_help_renders(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: nasq")


def test_parser_imports_neither_torch_nor_pandas():
    """Every `nasq` process builds the whole parser first; the heavy libraries wait for the verb that
    needs them, so `--help` and one-line errors answer at once (and each CLI process starts quickly)."""
    import subprocess
    import sys

    probe = ("import sys; from nasq.cli.main import build_parser; build_parser(); "
             "print(','.join(m for m in ('torch', 'pandas', 'ray', 'matplotlib') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"building the parser imported {proc.stdout.strip()}"
