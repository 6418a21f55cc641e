"""``python -m llm_init`` runs the CLI."""

from llm_init.cli import main

main()
