"""percli: token-level personalization (PerContrast / PerCE) experiments."""
