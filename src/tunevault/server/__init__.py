"""The HTTP server: aiohttp.web routes over the metadata store and blob storage."""
