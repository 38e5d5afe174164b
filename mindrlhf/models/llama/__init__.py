"""mindrlhf.models.llama."""
