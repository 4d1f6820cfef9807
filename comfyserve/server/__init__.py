"""The aiohttp server: app factory, middlewares, one module per route family, websocket hub."""
