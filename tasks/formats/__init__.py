"""The formats stages hand to each other (the docs Parquet parts)."""
