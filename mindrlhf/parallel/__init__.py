"""mindrlhf.parallel."""
