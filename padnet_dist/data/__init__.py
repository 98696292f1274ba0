"""Shard format, manifest, writer, converters, shard assignment, loader and augmentation (see shards/README.md)."""
