"""OCI data models: pure data, no IO."""
