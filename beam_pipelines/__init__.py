"""The Beam + TF Transform preprocessing job."""
