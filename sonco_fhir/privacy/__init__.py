"""Pseudonymisation at the door: nothing identifying reaches the cohort server."""
