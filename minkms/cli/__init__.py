"""The minkms command line."""
