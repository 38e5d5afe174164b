"""mindrlhf.utils."""
