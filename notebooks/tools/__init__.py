"""Tooling for the notebooks: execute them in place (`make notebooks`), build the book (`make book`),
check the book in headless Chromium (`make browser-test`). Not part of the installed package."""
