"""Test support for sqsjobs: a strict-AWS-rules layer (`aws_rules`) and fault injection (`faults`).

Both install through botocore's own event system, so they reach every boto3 and aiobotocore client
created afterwards (moto in-process, a moto server, or real AWS alike). `boot` installs them in a
subprocess from `SQSJOBS_TEST_STRICT=1` and `SQSJOBS_TEST_FAULTS=...`. For your own tests, `fake`
records dispatches instead of sending them, with assertions (`pytest_plugin` offers it as the
`sqsjobs_fake` fixture). See docs/testing.md.
"""
