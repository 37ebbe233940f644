"""proxy.config: the run configuration is the one place defaults live."""

from __future__ import annotations

import dataclasses

import pytest

from pac.sandbox import Limits
from proxy.cli import build_parser, pac_config, run_config
from proxy.config import DEFAULTS, PacConfig, RunConfig
from proxy.pac_source import PacSettings


def test_the_command_line_defaults_are_the_config_defaults() -> None:
    args = build_parser().parse_args(["run", "--mark", "0"])
    config = run_config(args, worker=False)
    # What the machine decides (the mark it may set, the descriptor-limited connection cap)
    # is filled in from the options; everything else is the default as written once.
    expected = dataclasses.replace(DEFAULTS, max_connections=config.max_connections)
    assert config == expected
    assert config.max_connections > 0


def test_a_changed_default_reaches_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """argparse reads `DEFAULTS` when the parser is built: no second copy of a value."""
    changed = dataclasses.replace(DEFAULTS, peek_timeout=7.5, pac=PacConfig(eval_timeout=3.0))
    monkeypatch.setattr("proxy.cli.DEFAULTS", changed)
    args = build_parser().parse_args(["run"])
    assert args.peek_timeout == 7.5
    assert pac_config(args).eval_timeout == 3.0


def test_explain_reads_the_same_pac_defaults() -> None:
    args = build_parser().parse_args(["explain", "example.com:443"])
    assert pac_config(args) == DEFAULTS.pac


def test_pac_defaults_agree_with_the_library_and_the_source() -> None:
    assert DEFAULTS.pac.limits() == Limits()
    settings = PacSettings()
    assert (settings.refresh, settings.timeout, settings.retry_max) == (
        DEFAULTS.pac.refresh,
        DEFAULTS.pac.fetch_timeout,
        DEFAULTS.pac.retry_max,
    )


def test_the_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULTS.peek_timeout = 1.0  # type: ignore[misc]
    assert isinstance(DEFAULTS, RunConfig)


def test_a_worker_of_a_supervisor_shares_its_listeners() -> None:
    args = build_parser().parse_args(["run", "--mark", "0", "--workers", "4"])
    assert run_config(args, worker=False).workers == 4
    worker = run_config(args, worker=True)
    assert (worker.workers, worker.reuse_port) == (1, True)
