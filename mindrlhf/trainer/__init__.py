"""mindrlhf.trainer."""
