"""The moderation sidecar: a reverse proxy in front of the model server (Art.4, Art.11, Art.14).

request → input moderation (Triton) → model → output moderation (Triton, in windows for streams)
→ response. `hegui.sidecar.app.make_app` builds the aiohttp application; `python -m
hegui.sidecar` runs it.
"""
