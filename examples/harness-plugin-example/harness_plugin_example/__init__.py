"""Example MedVLM Harness plugin package."""
