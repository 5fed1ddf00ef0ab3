"""`python -m tunevault` is the `tunevault` command."""

from tunevault.commands.main import main

main()
