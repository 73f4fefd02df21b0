"""Scaling laws and robust fitting (numpy + scipy; never torch)."""
