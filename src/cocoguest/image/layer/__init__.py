"""The per-layer stream chain: fetch, verify, decrypt, decompress, unpack, commit."""
