"""The official OpenAI Python SDK as a real client of a real `weft serve`.

Run by scripts/test.sh; alone: `scripts/test.sh --sdk-only python [pytest args]`.

Each test module run starts the `weft` binary (WEFT_BIN) on a free loopback
port with a fresh SQLite database in a temp dir, mints tokens with
`weft token`, and drives the threads/messages API through
`client.beta.threads`, exactly as an application would.
"""

import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import openai
import pytest

SECRET = "sdk-test-secret-0123456789abcdef0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def weft():
    binary = os.environ.get("WEFT_BIN", "target/debug/weft")
    assert os.path.exists(binary), f"build the weft binary first ({binary})"
    tmp = tempfile.mkdtemp(prefix="weft-sdk-")
    port = _free_port()
    env = dict(
        os.environ,
        WEFT_DATABASE_URL=f"sqlite://{tmp}/weft.db",
        WEFT_BIND=f"127.0.0.1:{port}",
        WEFT_JWT_SECRET=SECRET,
        WEFT_LOG="warn",
    )
    proc = subprocess.Popen([binary, "serve"], env=env, cwd=tmp)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        assert proc.poll() is None, "weft exited during start-up"
        assert time.monotonic() < deadline, "weft did not become ready within 60 s"
        time.sleep(0.2)

    def token(user: str) -> str:
        out = subprocess.run(
            [binary, "token", "--user", user], env=env, cwd=tmp, check=True, capture_output=True, text=True
        )
        return out.stdout.strip().splitlines()[-1]

    yield base, token
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def client_for(weft, user: str) -> openai.OpenAI:
    base, token = weft
    return openai.OpenAI(api_key=token(user), base_url=f"{base}/v1", max_retries=0)


def test_full_conversation_lifecycle_through_the_sdk(weft):
    client = client_for(weft, "sdk-alice")
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "Why did our GPU bill go up?"}],
        metadata={"project": "alpha"},
    )
    assert thread.id.startswith("thread_")
    assert thread.metadata == {"project": "alpha"}

    created = []
    for i in range(25):
        role = "assistant" if i % 2 else "user"
        m = client.beta.threads.messages.create(thread.id, role=role, content=f"message {i}")
        assert m.thread_id == thread.id
        assert m.content[0].text.value == f"message {i}"
        created.append(m.id)

    # Auto-pagination walks every page with after=last_id, in both orders.
    listed = [m.id for m in client.beta.threads.messages.list(thread.id, order="asc", limit=7)]
    assert listed[1:] == created
    assert len(listed) == 26
    assert [m.id for m in client.beta.threads.messages.list(thread.id, order="desc", limit=4)] == listed[::-1]

    got = client.beta.threads.messages.retrieve(created[3], thread_id=thread.id)
    assert got.id == created[3]
    assert got.role == "assistant"

    updated = client.beta.threads.update(thread.id, metadata={"stage": "review"})
    assert updated.metadata == {"project": "alpha", "stage": "review"}
    m = client.beta.threads.messages.update(created[0], thread_id=thread.id, metadata={"k": "v"})
    assert m.metadata == {"k": "v"}

    retrieved = client.beta.threads.retrieve(thread.id)
    assert retrieved.id == thread.id

    deleted = client.beta.threads.messages.delete(created[0], thread_id=thread.id)
    assert deleted.deleted is True
    deleted = client.beta.threads.delete(thread.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)


def test_another_users_thread_is_not_found(weft):
    alice = client_for(weft, "sdk-alice-2")
    bob = client_for(weft, "sdk-bob")
    thread = alice.beta.threads.create()
    with pytest.raises(openai.NotFoundError):
        bob.beta.threads.retrieve(thread.id)
    with pytest.raises(openai.NotFoundError):
        bob.beta.threads.messages.create(thread.id, role="user", content="hi")
    with pytest.raises(openai.NotFoundError):
        bob.beta.threads.delete(thread.id)
    assert alice.beta.threads.retrieve(thread.id).id == thread.id


def test_a_bad_token_is_an_authentication_error(weft):
    base, _ = weft
    client = openai.OpenAI(api_key="not-a-jwt", base_url=f"{base}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.beta.threads.create()


def test_invalid_input_is_a_bad_request_error(weft):
    client = client_for(weft, "sdk-carol")
    thread = client.beta.threads.create()
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.messages.create(thread.id, role="system", content="hi")
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.update(thread.id, metadata={f"k{i}": "v" for i in range(17)})


def _metric(weft, series: str) -> float:
    base, _ = weft
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line[len(series) + 1 :])
    return 0.0


def test_image_parts_are_accepted_and_returned_in_openai_form(weft):
    client = client_for(weft, "sdk-images")
    thread = client.beta.threads.create()
    m = client.beta.threads.messages.create(
        thread.id,
        role="user",
        content=[
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "image_file", "image_file": {"file_id": "file-abc", "detail": "low"}},
            {"type": "text", "text": "What is this?"},
        ],
    )
    assert m.content[0].type == "image_url"
    assert m.content[0].image_url.url == "https://example.com/cat.png"
    assert m.content[0].image_url.detail == "auto"
    assert m.content[1].image_file.file_id == "file-abc"
    assert m.content[1].image_file.detail == "low"
    assert m.content[2].text.value == "What is this?"


def test_a_reused_idempotency_key_is_a_conflict_the_sdk_does_not_retry(weft):
    base, token = weft
    client = openai.OpenAI(api_key=token("sdk-idem"), base_url=f"{base}/v1", max_retries=2)
    series = 'weft_http_requests_total{method="POST",route="/v1/threads",status="409"}'
    key = {"Idempotency-Key": "py-reused-key"}
    first = client.beta.threads.create(metadata={"n": "1"}, extra_headers=key)
    assert client.beta.threads.create(metadata={"n": "1"}, extra_headers=key).id == first.id
    before = _metric(weft, series)
    with pytest.raises(openai.ConflictError):
        client.beta.threads.create(metadata={"n": "2"}, extra_headers=key)
    assert _metric(weft, series) == before + 1, "sent once: x-should-retry: false was obeyed"


# Issue 9 item 2: paging on from a `before` list sends `after` and `before`
# together. Alone: scripts/test.sh --sdk-only python -k window
def test_window_auto_paginating_a_before_list_sends_after_and_before_together(weft):
    client = client_for(weft, "sdk-window")
    thread = client.beta.threads.create()
    ids = [client.beta.threads.messages.create(thread.id, role="user", content=f"w{i}").id for i in range(10)]
    # The 3 nearest before ids[8]; page 2 (after=ids[7], before=ids[8]) is empty.
    first = client.beta.threads.messages.list(thread.id, before=ids[8], limit=3, order="asc")
    assert [m.id for m in first.data] == ids[5:8]
    assert first.has_next_page(), "the SDK asks for a second page"
    assert [m.id for m in client.beta.threads.messages.list(thread.id, before=ids[8], limit=3, order="asc")] == ids[5:8]
    desc = client.beta.threads.messages.list(thread.id, before=ids[2], limit=3, order="desc")
    assert [m.id for m in desc] == [ids[5], ids[4], ids[3]]
    # An explicit window, paged over several pages from its `after` side.
    between = client.beta.threads.messages.list(thread.id, after=ids[1], before=ids[8], limit=2, order="asc")
    assert [m.id for m in between] == ids[2:8]
    between_desc = client.beta.threads.messages.list(thread.id, after=ids[8], before=ids[1], limit=2, order="desc")
    assert [m.id for m in between_desc] == list(reversed(ids[2:8]))
def _readme_block(lang: str) -> str:
    """The first ```lang block under README.md's Quick start heading."""
    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    section = readme.read_text().split("\n## Quick start\n", 1)[1]
    fence = f"```{lang}\n"
    start = section.index(fence) + len(fence)
    return section[start : section.index("```", start)]


def test_the_readme_python_snippet_runs_with_the_exported_token(weft):
    """README.md's Python snippet, run as pasted after the shell block
    exported TOKEN (only the port differs from 8080)."""
    base, token = weft
    code = _readme_block("python").replace("http://127.0.0.1:8080", base)
    env = dict(os.environ, TOKEN=token("readme-user"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["user Hello", "assistant Hi!"]
