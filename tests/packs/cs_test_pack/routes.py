import folder_paths
from aiohttp import web
from server import PromptServer

server = PromptServer.instance


@server.routes.get("/cs_test/hello")
async def hello(request):
    return web.json_response({"hello": "custom nodes", "input_directory": folder_paths.get_input_directory()})


@server.routes.post("/cs_test/echo")
async def echo(request):
    body = await request.json()
    PromptServer.instance.send_sync("cs_test.echo", body)  # to every client
    return web.json_response(body)


async def via_app(request):
    return web.Response(text="added with app.add_routes")


server.app.add_routes([web.get("/cs_test/via_app", via_app)])


def override_steps(body):
    # An on-prompt handler: `cs_test_steps` in the POST /prompt body sets every countdown's steps.
    steps = body.get("cs_test_steps") if isinstance(body, dict) else None
    if isinstance(steps, int):
        for node in body.get("prompt", {}).values():
            if node.get("class_type") == "CSCountdown":
                node["inputs"]["steps"] = steps
    return body


server.add_on_prompt_handler(override_steps)
