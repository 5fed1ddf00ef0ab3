"""The `tunevault` subcommands, one module per command."""
