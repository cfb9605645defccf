"""The `tinylm` command line: main.py builds the parser; one module per group of subcommands."""
