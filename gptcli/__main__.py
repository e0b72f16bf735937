"""Entry point for ``python -m gptcli``."""

from gptcli.cli import main

if __name__ == "__main__":
    main()
