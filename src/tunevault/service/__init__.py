"""The domain: resolve a download, publish, receive uploads, build archives and merges, collect
garbage. What the routes, the commands and the worker all call; errors stay domain errors
(tunevault.errors) and become HTTP only at the server's edge."""
