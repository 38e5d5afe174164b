"""MindRLHF."""
