"""Domain logic the routes and commands call: what reads and writes the store and storage."""
