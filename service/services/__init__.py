"""Service layer: the logic behind the routes (uploads, jobs, dry runs).

Services take a session and never commit: the request dependency owns the transaction.
"""
