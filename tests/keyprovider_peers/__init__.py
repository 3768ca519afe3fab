"""Key provider peers for the tests: a ``cmd`` provider script and an in-process gRPC provider.

They implement the provider side of ocicrypt.md §5.5 independently of cocoguest's protocol module (only the
standard library and AES-256-GCM), so a mistake in cocoguest's request encoding makes the tests fail.
"""
