"""Behind a TLS-terminating proxy (issue #27, point 7): nginx believes X-Forwarded-Proto
and X-Forwarded-For from the proxies of TRUSTED_PROXIES only.

A second nginx (the kit's image, its own config) terminates TLS in front of the stack's
nginx on the compose network, as an ingress controller does: it says `X-Forwarded-Proto:
https` and appends the client's address to X-Forwarded-For. The stack's nginx is
recreated with TRUSTED_PROXIES naming that proxy: the demo login over https, with an
https Origin, succeeds; recreated without it, the same login is refused (403: Django sees
`http`, and the https Origin is another site's). The module puts nginx back as the
stack's configuration has it.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import compose, demo_login_form, dotenv, http, parts

pytestmark = parts("direct")

SPOOFED = "203.0.113.9"  # a client's own X-Forwarded-For must not become its address

PROXY_CONF = """\
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr warn;
events { worker_connections 64; }
http {
    client_body_temp_path /tmp/client_body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    access_log off;
    # Docker's DNS, re-asked: the stack's nginx gets a new address when it is recreated.
    resolver 127.0.0.11 valid=1s ipv6=off;
    server {
        listen 8443 ssl;
        ssl_certificate /proxy/cert.pem;
        ssl_certificate_key /proxy/key.pem;
        location / {
            set $front nginx;
            proxy_pass http://$front:8080;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
    }
}
"""


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], check=True, capture_output=True, text=True, timeout=120
    ).stdout.strip()


class TlsProxy:
    """The proxy container: its https base URL, its address on the compose network, and a
    client that trusts its certificate."""

    def __init__(self, container: str, base_url: str, address: str, cafile: Path) -> None:
        self.container, self.base_url, self.address = container, base_url, address
        context = ssl.create_default_context(cafile=str(cafile))
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context), NoRedirect
        )

    def open(self, path: str, data: bytes | None = None, headers: dict | None = None):
        """(status, headers, body), redirects not followed, so Set-Cookie stays visible."""
        request = urllib.request.Request(self.base_url + path, data, headers or {})
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, request) -> TlsProxy:
    """The TLS proxy on the stack's network, in front of its nginx; removed afterwards."""
    (nginx,) = compose("ps", "--quiet", "nginx").stdout.split()[:1]
    image = docker("inspect", "--format", "{{.Config.Image}}", nginx)
    network = docker(
        "inspect", "--format", "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}", nginx
    )
    network = network.split()[0]
    folder = tmp_path_factory.mktemp("tls-proxy")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (folder / "nginx.conf").write_text(PROXY_CONF)
    # The image's user (not this one) reads them: a throwaway key of this test only.
    folder.chmod(0o755)
    for name in ("key.pem", "cert.pem", "nginx.conf"):
        (folder / name).chmod(0o644)
    container = docker(
        "run", "--rm", "--detach", "--no-healthcheck", "--network", network,
        "--publish", "127.0.0.1::8443", "--volume", f"{folder}:/proxy:ro",
        "--entrypoint", "nginx", image, "-c", "/proxy/nginx.conf", "-g", "daemon off;",
    )  # fmt: skip
    request.addfinalizer(lambda: subprocess.run(["docker", "rm", "--force", container], capture_output=True))
    port = docker("port", container, "8443/tcp").splitlines()[0].rsplit(":", 1)[1]
    address = docker(
        "inspect",
        "--format",
        f"{{{{(index .NetworkSettings.Networks {json.dumps(network)}).IPAddress}}}}",
        container,
    )
    tls = TlsProxy(container, f"https://127.0.0.1:{port}", address, folder / "cert.pem")
    deadline = time.monotonic() + 30
    while True:
        try:
            if tls.open("/nginx-health")[0] == 200:
                return tls
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the TLS proxy did not answer:\n{docker('logs', container)}")
        time.sleep(0.3)


def recreate_nginx(trusted: str | None) -> None:
    """nginx recreated with TRUSTED_PROXIES=``trusted`` (None: the stack's own setting), healthy."""
    env = None if trusted is None else {"TRUSTED_PROXIES": trusted}
    compose("up", "--detach", "--no-deps", "--wait", "nginx", env=env, timeout=180)
    (nginx,) = compose("ps", "--quiet", "nginx").stdout.split()[:1]
    env_list = docker("inspect", "--format", "{{json .Config.Env}}", nginx)
    if trusted is not None:
        assert f"TRUSTED_PROXIES={trusted}" in json.loads(env_list)
    assert http("GET", "/nginx-health").status == 200


@pytest.fixture(scope="module")
def nginx_as_found():
    """Whatever a test did to nginx's TRUSTED_PROXIES, the stack's own setting afterwards."""
    yield
    recreate_nginx(None)


def cookies(headers) -> dict[str, str]:
    return {value.split("=", 1)[0]: value.split(";", 1)[0] for value in headers.get_all("Set-Cookie") or []}


def log_in(proxy: TlsProxy) -> tuple[int, dict[str, str], bytes]:
    """The demo login through the proxy, as a browser on the https site posts it:
    (status, Set-Cookie name -> cookie, body)."""
    status, headers, body = proxy.open("/accounts/login/")
    assert status == 200, body[:300]
    csrf = cookies(headers)["csrftoken"]
    form = demo_login_form(body)
    status, headers, body = proxy.open(
        "/accounts/login/",
        urllib.parse.urlencode(form).encode(),
        {
            "Cookie": csrf,
            "Origin": proxy.base_url,
            "Referer": f"{proxy.base_url}/accounts/login/",
            "Content-Type": "application/x-www-form-urlencoded",
            # What a client says about itself does not count: only the proxy's entry.
            "X-Forwarded-For": SPOOFED,
        },
    )
    return status, cookies(headers), body


def whoami(proxy: TlsProxy, cookie: str | None = None) -> dict:
    headers = {"X-Forwarded-For": SPOOFED} | ({"Cookie": cookie} if cookie else {})
    status, _, body = proxy.open("/whoami", headers=headers)
    assert status == 200, body[:300]
    return json.loads(body)


def test_login_through_a_trusted_tls_proxy(proxy, nginx_as_found):
    """TRUSTED_PROXIES names the proxy: Django sees https and the client's address, and the
    login POST with an https Origin is accepted."""
    recreate_nginx(f"{proxy.address}/32")
    seen = whoami(proxy)
    assert seen["scheme"] == "https", seen
    # realip: the address the proxy saw (Docker's gateway), not the proxy's, nor the spoofed one.
    assert seen["client"] not in (proxy.address, SPOOFED), seen
    status, set_cookies, body = log_in(proxy)
    assert status == 302, f"login through the TLS proxy failed ({status}): {body[:300]!r}"
    assert "sessionid" in set_cookies, set_cookies
    assert whoami(proxy, set_cookies["sessionid"])["user"] == dotenv("DEMO_USER", "demo")


def test_an_untrusted_proxy_is_not_believed(proxy, nginx_as_found):
    """No TRUSTED_PROXIES (the default): the proxy is just a client, nginx says `http` and its
    address, and the https login is refused as a cross-site POST."""
    recreate_nginx("")
    seen = whoami(proxy)
    assert seen["scheme"] == "http" and seen["client"] == proxy.address, seen
    status, set_cookies, body = log_in(proxy)
    assert status == 403, f"expected CSRF's 403 without trust, got {status}: {body[:300]!r}"
    assert "sessionid" not in set_cookies
