"""The facility: sites, rooms and monitors from the facility file, limit sets and levels,
maintenance inhibits, and the room-state timeline (at rest / in operation)."""
