"""mindrlhf.tools."""
