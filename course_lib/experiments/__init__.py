"""Runs of the course's experiments from the command line: one configuration (:mod:`.train`)."""
