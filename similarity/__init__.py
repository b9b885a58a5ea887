"""Visual similarity: per-group nearest neighbours of the image embeddings, and their tokens."""
