"""mindrlhf.models."""
