"""The command groups of the `crawl2chat` CLI, one module per domain (see flows/cli.py)."""
