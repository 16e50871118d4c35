"""The filter chain's steps: URL blocklist, extraction, language ID, quality rules, PII scrubbing."""
