"""Domain functions: what routes and commands do with the metadata store and storage."""
