"""cordwatch domain logic: one module per pipeline stage, no orchestration imports."""
