"""Checkpoints: reading, converting and loading EVA weights."""
