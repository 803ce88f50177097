"""Benchmarks: sqsjobs against hand-written boto3 on a counting moto server (`make bench`)."""
