"""HTTP routes: parse and authorise, then call a service; no queries or logic here.

One module per resource; `service.app.create_app` mounts them.
"""
