"""The write side: the single writer of every stream, the relay, and the deadline scheduler."""
