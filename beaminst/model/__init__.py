"""The proto model and its I/O: Beam's generated protos without the SDK, reading and writing
pipelines, the one URN table, content signatures, the id allocator, bounded and safe decoding."""
