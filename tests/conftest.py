"""Makes tests/ importable, for the helpers shared by several test folders."""
