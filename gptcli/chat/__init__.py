"""The chat's parts beside its session loop (gptcli/repl.py): slash commands, their handlers, the prompt."""
