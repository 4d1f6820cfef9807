"""Files clients send and fetch: uploads, masks, `/view` renditions, model-file metadata.

One module per job; `comfyserve.server.routes.files` wires them to HTTP.
"""
