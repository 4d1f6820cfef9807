"""One module per route family. Each defines `routes` (a RouteTableDef served both at `/x`
and `/api/x`) and may define `internal_routes` (served once, without the `/api` twin)."""

# Order matters only for routes with overlapping patterns; the frontend's catch-all comes last.
ROUTE_MODULES = [
    "comfyserve.server.routes.prompt",
    "comfyserve.server.routes.jobs",
    "comfyserve.server.routes.ws",
    "comfyserve.server.routes.files",
    "comfyserve.server.routes.user",
    "comfyserve.server.routes.info",
    "comfyserve.server.routes.v1_prompts",
    "comfyserve.server.routes.frontend",
]
