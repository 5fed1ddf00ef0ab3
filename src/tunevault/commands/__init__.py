"""The CLI commands of tunevault, one module each (registered in tunevault.cli)."""
