"""ear: a self-hosted listening service (identify, similar, humming)."""
