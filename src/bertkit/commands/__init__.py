"""What the `bertkit` command runs, as Python functions with the command line's flags as keywords:
`finetune`, `evaluate`, `pretrain`, `predict`, `demo`. `cli.py` only parses flags and prints."""
