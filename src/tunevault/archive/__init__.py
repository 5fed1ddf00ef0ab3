"""Archives: the deterministic tar.zst writer, the safe streaming reader, blob checksums."""
