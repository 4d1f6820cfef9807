"""Browser-origin and Host checks (ComfyUI's advisories replayed), CORS, and error shapes."""

from __future__ import annotations

import http.client

import pytest

from tests.api.client import get, request
from tests.conftest import reference

REF = reference("routes_basic.json")


def raw_get(server, path: str, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    """A GET with exactly these headers (urllib would add its own Host)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("GET", path, skip_host="Host" in headers)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    resp = conn.getresponse()
    result = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return result


def test_origin_mismatch_is_403_for_get_and_post(server):
    for key in ("GET /system_stats Origin mismatch", "POST /prompt Origin mismatch"):
        ref = REF[key]
        reply = request(server.url, ref["request"]["method"], "/system_stats" if "GET" in key else "/prompt",
                        body=ref["request"].get("json"), headers=ref["request"]["headers"])
        assert reply.status == ref["response"]["status"] == 403
        assert reply.body == b""


def test_matching_origin_is_allowed(server):
    reply = get(server.url, "/system_stats", headers={"Origin": server.url})
    assert reply.status == 200


@pytest.mark.parametrize("headers", [
    {"Origin": "null"},
    {"Origin": "NULL"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "Cross-Site"},
    {"Origin": "http://127.0.0.1:1"},
])
def test_cross_site_browser_requests_are_refused(server, headers):
    assert get(server.url, "/system_stats", headers=headers).status == 403


def test_same_origin_fetch_metadata_is_allowed(server):
    assert get(server.url, "/system_stats", headers={"Sec-Fetch-Site": "same-origin"}).status == 200


@pytest.mark.parametrize("host", ["evil.example.com", "evil.example.com:8188", "127.0.0.1.nip.io"])
def test_dns_rebinding_hosts_are_refused(server, host):
    status, _, _ = raw_get(server, "/system_stats", {"Host": host})
    assert status == 403


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "LOCALHOST:1234"])
def test_loopback_hosts_are_accepted(server, host):
    status, _, _ = raw_get(server, "/system_stats", {"Host": host})
    assert status == 200


def test_allowed_hosts_flag_admits_a_proxy_name(make_server):
    srv = make_server("--allowed-hosts", "comfy.internal")
    assert raw_get(srv, "/system_stats", {"Host": "comfy.internal"})[0] == 200
    assert raw_get(srv, "/system_stats", {"Host": "other.internal"})[0] == 403


def test_cors_header_flag(make_server):
    srv = make_server("--enable-cors-header")
    reply = get(srv.url, "/system_stats", headers={"Origin": "http://elsewhere.example"})
    assert reply.status == 200
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    preflight = request(srv.url, "OPTIONS", "/prompt", headers={"Origin": "http://elsewhere.example"})
    assert preflight.status == 200 and preflight.body == b""
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]


def test_error_shapes(server):
    ref = REF["GET /no/such/route"]["response"]
    reply = get(server.url, "/no/such/route")
    assert reply.status == ref["status"] == 404
    assert reply.headers.get("Content-Type") == "application/octet-stream"
    assert reply.body == b""
    options = request(server.url, "OPTIONS", "/prompt")
    assert (options.status, options.body) == (200, b"")
    wrong = request(server.url, "PUT", "/prompt")
    assert wrong.status == REF["PUT /prompt"]["response"]["status"] == 405
    assert get(server.url, "/interrupt").status in (404, 405)
