"""The Gopher, C4 and FineWeb quality rules and the text statistics they share."""
