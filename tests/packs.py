"""The tests' own reading of how chunks sit in storage, to inspect and damage them: a package
container holds ``packs/<pack id>`` blobs of sealed chunks back to back, each pack's metadata
``chunks`` listing ``<chunk id>:<stored size>`` in order."""

from __future__ import annotations


def stored_chunks(container) -> dict[str, tuple[str, int, int]]:
    """chunk id -> (pack blob name, offset, stored size), for every chunk in the container."""
    where = {}
    for blob in container.list_blobs(name_starts_with="packs/", include=["metadata"]):
        offset = 0
        for item in blob.metadata["chunks"].split(","):
            chunk_id, size = item.split(":")
            where[chunk_id] = (blob.name, offset, int(size))
            offset += int(size)
    return where


def pack_sizes(container) -> dict[str, int]:
    return {blob.name: blob.size for blob in container.list_blobs(name_starts_with="packs/")}


def corrupt_chunk(container, chunk_id: str) -> str:
    """Flip the last byte (the GCM tag's) of one stored chunk; returns its pack's blob name."""
    name, offset, size = stored_chunks(container)[chunk_id]
    blob = container.get_blob_client(name)
    metadata = blob.get_blob_properties().metadata
    data = bytearray(blob.download_blob().readall())
    data[offset + size - 1] ^= 0xFF
    blob.upload_blob(bytes(data), overwrite=True, metadata=metadata)
    return name


def drop_pack_of(container, chunk_id: str) -> set[str]:
    """Delete the pack holding ``chunk_id``; returns the ids of every chunk that was in it."""
    where = stored_chunks(container)
    name = where[chunk_id][0]
    container.delete_blob(name)
    return {c for c, (pack, _, _) in where.items() if pack == name}
