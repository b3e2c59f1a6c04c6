"""Where a cache lives (a local path or a URL), what a cache directory holds, and streaming recordings."""
