"""`python -m tunevault` is the `tunevault` command."""

from tunevault.cli import main

main()
