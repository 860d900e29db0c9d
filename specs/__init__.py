"""Example specs shipped with alexspec (importable as `alexspec.specs`)."""
