"""Data leaving the site: the exchange package (records, schemas, signed manifest) and its
verifier (docs/exchange.md)."""
