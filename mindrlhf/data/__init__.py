"""mindrlhf.data."""
