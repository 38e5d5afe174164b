"""mindrlhf.generation."""
