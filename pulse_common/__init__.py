"""Runtime helpers shared by the agent and the server: logs, files, HTTP answers, settings."""
