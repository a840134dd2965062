"""The pure core: OCI images as data. Digests and verifying streams,
descriptors, platforms, manifests, indexes and configs with one canonical
JSON encoding, the one reference grammar, normalised file entries, the
deterministic tar writer, pinned compressors, blobs and layers, the image
and its derivation from a base, the layout and archive formats, readers of
existing images, the built-in bases, and assembly.

Nothing here imports an engine, the network or click (tests/test_quality.py
checks it): every function depends only on its arguments and the files it
is pointed at."""
