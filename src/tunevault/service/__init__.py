"""Domain functions over the metadata store and storage, called by routes and commands."""
