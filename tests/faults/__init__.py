"""Fault injection: every fault of docs/reliability.md, caused for real and checked."""
