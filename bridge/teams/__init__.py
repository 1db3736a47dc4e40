"""The Microsoft Teams connector, and the Graph emulator its tests and demos run against."""
