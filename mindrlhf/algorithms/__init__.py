"""mindrlhf.algorithms."""
