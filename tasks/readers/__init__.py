"""Reading inputs: resolving paths, globs, s3:// and Common Crawl snapshots; parsing WARC files."""
