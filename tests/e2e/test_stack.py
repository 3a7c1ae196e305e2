"""The app contract through nginx: health, page, static files, limits, background tasks."""

from conftest import ASGI_APP_ROLE, ASGI_MODE, http, parts, post_json, run_task, service_exec, service_hosts

pytestmark = parts("direct", "local", "rabbitmq", "postgres", "relay")


def test_healthz_names_the_answering_daphne():
    # In relay mode the interface server answers it itself: liveness needs no worker.
    response = http("GET", "/healthz")
    assert response.status == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["server"].startswith("daphne/")
    assert response.headers["X-Served-By"] == body["server"]
    assert body.get("mode", "direct") == ASGI_MODE


def test_readyz_sees_database_and_channel_layer():
    response = http("GET", "/readyz")
    assert response.status == 200, response.body
    checks = response.json()["checks"]
    assert checks["database"]["ok"] and checks["channel_layer"]["ok"]


def test_chat_page_and_its_static_files():
    page = http("GET", "/?room=e2e-page")
    assert page.status == 200
    assert page.headers["X-Served-By"].startswith(ASGI_APP_ROLE)
    if ASGI_MODE == "relay":
        assert page.headers["X-Relayed-By"].startswith("daphne/")
    assert b'src="/static/chat/chat.js"' in page.body
    script = http("GET", "/static/chat/chat.js")
    assert script.status == 200 and b"new WebSocket" in script.body
    assert "X-Served-By" not in script.headers  # nginx serves it, not Django


def test_background_task_runs_on_a_thumbnail_worker():
    task = run_task({"sleep": 0.1, "name": "thumbnail-1"})
    assert task["status"] == "done" and task["channel"] == "thumbnail"
    assert task["worker"].startswith("worker/")
    assert task["worker"].removeprefix("worker/") in service_hosts("worker-slow")
    assert task["result"]["echo"] == {"sleep": 0.1, "name": "thumbnail-1"}
    assert task["started"] is not None


def test_tasks_channel_runs_on_a_general_worker():
    task = run_task({"name": "quick-1"}, channel="tasks")
    assert task["status"] == "done" and task["channel"] == "tasks"
    assert task["worker"].removeprefix("worker/") in service_hosts("worker")
    assert task["result"]["echo"] == {"name": "quick-1"}


def test_unknown_task_channel_is_refused():
    response = post_json("/tasks/", {"channel": "nope"})
    assert response.status == 400
    assert "thumbnail" in response.json()["error"]


def test_tasks_endpoint_accepts_only_json():
    response = http("POST", "/tasks/", b"a=1", {"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 415


def test_request_body_limit_is_enforced_by_nginx():
    response = post_json("/tasks/", {"blob": "x" * (2 * 1024 * 1024)})
    assert response.status == 413


def test_unknown_host_is_refused():
    # Django's ALLOWED_HOSTS check (a page: in relay mode /healthz is the interface's own).
    response = http("GET", "/whoami", headers={"Host": "evil.example"})
    assert response.status == 400


def test_every_python_service_runs_the_installed_kit():
    """The images install the kit's wheel: it comes from the venv, in every role."""
    code = "import channels_kit; print(channels_kit.__file__)"
    for service in ("daphne", "worker", "worker-slow"):
        location = service_exec(service, "python", "-c", code).stdout.strip()
        assert location.startswith("/opt/venv/lib/") and "/site-packages/" in location, (service, location)
