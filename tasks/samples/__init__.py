"""Generators of sample data (a synthetic crawl, a dedup corpus) for runs, tests and benches."""
