"""Deployment files: the nginx config template and the fleet launcher (deploy/fleet.py)."""
