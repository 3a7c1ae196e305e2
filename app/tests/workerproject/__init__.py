"""A small Django project whose ``runworker`` the tests run as a real subprocess."""
