"""(placeholder: filled in by the work on this command group)."""

from gptcli.cli.app import app  # noqa: F401
