"""I/O helpers the edges share (atomic writes, file locks)."""
