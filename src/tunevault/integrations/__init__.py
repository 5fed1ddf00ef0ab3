"""Hooks into training frameworks; each module imports its framework, so import it directly."""
