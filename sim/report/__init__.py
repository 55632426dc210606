"""Reports: files a planner reads, written atomically."""
