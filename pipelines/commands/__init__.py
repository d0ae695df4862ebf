"""One module per `kiln` subcommand; see pipelines/cli.py."""
