"""Domain logic the routes, the worker and the commands call: the store and storage behind."""
