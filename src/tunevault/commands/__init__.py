"""Every `tunevault` CLI command: thin shells over the service, the client and the publisher."""
